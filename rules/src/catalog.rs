//! What the rules can refer to: the site's points, devices and cameras, as the adapters'
//! configs describe them.

use gatehouse_protocol::{DeviceId, PointId, Value, ZoneId};

use crate::expr::Type;

/// One point of the site.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub id: PointId,
    pub device: DeviceId,
    pub zone: Option<ZoneId>,
    /// The type of its values.
    pub value_type: Type,
    /// Whether commands can set it.
    pub writable: bool,
    /// An egress door's lock: the value that locks it. While a life-safety rule is active,
    /// no command may write this value (see [`crate::engine`]).
    pub egress_locked: Option<Value>,
}

/// Everything the rules of a site can name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub points: Vec<PointSpec>,
    /// Devices, with or without points (a device's status events name it).
    pub devices: Vec<DeviceId>,
    /// Cameras a `clip` action may name.
    pub cameras: Vec<DeviceId>,
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (possibly
/// empty) and every other character for itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, between)) = middle.split_last() else {
        // No `*` at all: the whole text must have been the prefix.
        return rest.is_empty();
    };
    for part in between {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        let cases = [
            ("lobby.door", "lobby.door", true),
            ("lobby.door", "lobby.doors", false),
            ("lobby.*", "lobby.door", true),
            ("lobby.*", "lobby.", true),
            ("lobby.*", "hall.door", false),
            ("*.door", "lobby.door", true),
            ("*.door", "lobby.door.contact", false),
            ("*door*", "lobby.door.contact", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                glob_matches(pattern, text),
                expected,
                "{pattern} against {text}"
            );
        }
    }
}
