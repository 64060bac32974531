// The ordered JSON parser moved to its own target so that adapter configs can use it too;
// re-exported so every file here (and clients) keep seeing `JSON`.
@_exported import OrderedJSON
