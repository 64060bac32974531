import Foundation
import Kernels

/// The quickstart's task: turn a short natural-language request into one strict JSON object
/// (intent, slots, 24-hour times, lower-case values, fixed key order). The base chat model
/// answers in prose or with its own keys; the exact answer is checkable character by character.
/// Generated from a seed, so the splits are reproducible; the test split never meets training.
public enum QuickstartTask {
    public struct Item: Sendable, Codable, Equatable {
        public var request: String
        public var json: String
        public var prompt: String { QuickstartTask.prompt(request) }
    }

    public static func prompt(_ request: String) -> String {
        "Convert the request to JSON.\nRequest: \(request)\nJSON:"
    }

    static let days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    static let cities = ["paris", "london", "tokyo", "berlin", "madrid", "rome", "oslo", "lima", "cairo", "sydney", "toronto", "dublin"]
    static let names = ["anna", "ben", "chloe", "david", "emma", "farid", "grace", "hugo", "ines", "jonas", "kate", "liam"]
    static let messages = ["i am running late", "see you tonight", "call me back", "the meeting moved", "dinner is ready", "happy birthday"]
    static let numbers = ["one", "two", "three", "four", "five", "six", "seven", "eight"]

    /// A time said in a request and its 24-hour form.
    static func time(_ g: inout SplitMix64) -> (said: String, hhmm: String) {
        let hour = 1 + Int(g.next() % 12), pm = g.next() % 2 == 0
        let minute = [0, 15, 30, 45][Int(g.next() % 4)]
        let h24 = (hour % 12) + (pm ? 12 : 0)
        let said = minute == 0 ? "\(hour)\(pm ? "pm" : "am")" : "\(hour):\(String(format: "%02d", minute)) \(pm ? "pm" : "am")"
        return (said, String(format: "%02d:%02d", h24, minute))
    }

    static func pick<T>(_ items: [T], _ g: inout SplitMix64) -> T { items[Int(g.next() % UInt64(items.count))] }

    static func capitalized(_ s: String) -> String { s.prefix(1).uppercased() + s.dropFirst() }

    static func item(_ g: inout SplitMix64) -> Item {
        let day = pick(days, &g), dayWord = pick([capitalized(day), day, "next " + day], &g)
        switch g.next() % 4 {
        case 0:
            let n = 1 + Int(g.next() % 8), t = time(&g)
            let people = g.next() % 2 == 0 ? "\(n)" : numbers[n - 1]
            let request = pick([
                "Book a table for \(people) at \(t.said) on \(dayWord).",
                "Reserve a table for \(people) people on \(dayWord) at \(t.said), please.",
                "Can you get us a table for \(people) on \(dayWord) around \(t.said)?",
            ], &g)
            return Item(request: request, json: #"{"intent": "book_table", "people": \#(n), "time": "\#(t.hhmm)", "day": "\#(day)"}"#)
        case 1:
            let t = time(&g)
            let request = pick(["Wake me up at \(t.said) on \(dayWord).", "Set an alarm for \(t.said) on \(dayWord).",
                                "I need an alarm on \(dayWord) at \(t.said)."], &g)
            return Item(request: request, json: #"{"intent": "set_alarm", "time": "\#(t.hhmm)", "day": "\#(day)"}"#)
        case 2:
            let city = pick(cities, &g)
            let request = pick(["What's the weather in \(capitalized(city)) on \(dayWord)?",
                                "Will it rain in \(capitalized(city)) on \(dayWord)?",
                                "Weather forecast for \(capitalized(city)), \(dayWord)."], &g)
            return Item(request: request, json: #"{"intent": "weather", "city": "\#(city)", "day": "\#(day)"}"#)
        default:
            let name = pick(names, &g), text = pick(messages, &g)
            let request = pick(["Text \(capitalized(name)) that \(text).", "Send a message to \(capitalized(name)): \(text).",
                                "Tell \(capitalized(name)) \(text)."], &g)
            return Item(request: request, json: #"{"intent": "send_message", "to": "\#(name)", "text": "\#(text)"}"#)
        }
    }

    /// Distinct items split into train, validation and test (no request appears in two splits).
    public static func splits(seed: UInt64, train: Int, valid: Int, test: Int) -> (train: [Item], valid: [Item], test: [Item]) {
        var g = SplitMix64(seed: seed)
        var seen = Set<String>(), items: [Item] = []
        var attempts = 0
        while items.count < train + valid + test && attempts < 100 * (train + valid + test) {
            attempts += 1
            let item = item(&g)
            if seen.insert(item.request).inserted { items.append(item) }
        }
        let a = Array(items.prefix(train)), b = Array(items.dropFirst(train).prefix(valid)), c = Array(items.dropFirst(train + valid).prefix(test))
        return (a, b, c)
    }

    /// JSONL in the prompt/completion format (`" " + json` completes the prompt).
    public static func jsonl(_ items: [Item]) -> Data {
        let lines = items.map { item -> String in
            let object: [String: String] = ["prompt": item.prompt, "completion": " " + item.json]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            return String(decoding: data, as: UTF8.self)
        }
        return Data((lines.joined(separator: "\n") + "\n").utf8)
    }
}
