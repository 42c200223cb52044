import Foundation

/// Durations written the Go way, as numbers each followed by a unit: `15m`, `1h30m`, `1.5s`,
/// `20ms`, and `d` for days (`7d`).
public enum DurationText {
    /// Seconds, or nil when `text` is not such a duration.
    public static func seconds(_ text: String) -> Double? {
        var total = 0.0
        var number = ""
        var unit = ""
        var any = false
        func flush() -> Bool {
            guard let value = Double(number) else { return false }
            let scale: Double
            switch unit {
            case "d": scale = 86_400
            case "h": scale = 3600
            case "m": scale = 60
            case "s": scale = 1
            case "ms": scale = 0.001
            case "us", "µs": scale = 0.000_001
            case "ns": scale = 0.000_000_001
            default: return false
            }
            total += value * scale
            number = ""
            unit = ""
            any = true
            return true
        }
        for character in text {
            if character.isNumber || character == "." {
                if !unit.isEmpty { guard flush() else { return nil } }
                number.append(character)
            } else if character.isLetter {
                guard !number.isEmpty else { return nil }
                unit.append(character)
            } else {
                return nil
            }
        }
        if !number.isEmpty || !unit.isEmpty { guard flush() else { return nil } }
        return any ? total : nil
    }
}
