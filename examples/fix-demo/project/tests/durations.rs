use tempo::{format_duration, parse_duration, ParseError};

#[test]
fn seconds_minutes_and_hours() {
    assert_eq!(parse_duration("90s"), Ok(90));
    assert_eq!(parse_duration("2m"), Ok(120));
    assert_eq!(parse_duration("1h30m"), Ok(5_400));
}

#[test]
fn spaces_between_parts() {
    assert_eq!(parse_duration("1h 30m 15s"), Ok(5_415));
}

#[test]
fn bad_input_says_what_is_wrong() {
    assert_eq!(parse_duration("90"), Err(ParseError::MissingUnit("90".into())));
    assert_eq!(parse_duration("h30m"), Err(ParseError::MissingNumber('h')));
    assert_eq!(parse_duration("3w"), Err(ParseError::UnknownUnit('w')));
}

#[test]
fn formatting_round_trips() {
    assert_eq!(format_duration(0), "0s");
    assert_eq!(format_duration(5_415), "1h30m15s");
    assert_eq!(parse_duration(&format_duration(5_415)), Ok(5_415));
}
