import ArgumentParser
import Keel

/// Seconds from a duration option's text (`7d`, `12h`, `250ms`: ``DurationText``), positive, or
/// zero when `zero` names how it is written (`0`); else a ValidationError naming the option,
/// `examples` of what it takes, and the text given.
func durationOption(_ text: String, _ option: String, examples: String, zero: String? = nil) throws -> Double {
    if let zero, text == zero { return 0 }
    guard let seconds = DurationText.seconds(text), seconds > 0 || (zero != nil && seconds == 0) else {
        throw ValidationError("\(option) must be a duration such as \(examples), not '\(text)'")
    }
    return seconds
}
