// Tokenizers: byte-level BPE and WordPiece (being written).
