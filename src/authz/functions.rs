//! Casbin's built-in matching functions, with the semantics of Casbin's Go
//! implementation (the reference its test suites assert): keyMatch,
//! keyMatch2, keyMatch3, regexMatch, ipMatch, globMatch.

use std::net::IpAddr;

use ipnet::IpNet;
use regex_lite::Regex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error("invalid regular expression {0:?}: {1}")]
    Regex(String, String),
    #[error("ipMatch: {0:?} is not an IP address")]
    Ip(String),
    #[error("ipMatch: {0:?} is neither an IP address nor a CIDR")]
    Cidr(String),
}

/// `/foo*` matches everything starting with `/foo`: a `*` ends the comparison.
pub fn key_match(key: &str, pattern: &str) -> bool {
    match pattern.find('*') {
        None => key == pattern,
        Some(i) if key.len() > i => key.as_bytes()[..i] == pattern.as_bytes()[..i],
        Some(i) => key == &pattern[..i],
    }
}

/// The regular expression keyMatch2 tests with: `/*` → `/.*`, `:name` → `[^/]+`, anchored.
/// A lone `*` matches everything (Casbin's Go role manager relies on it for
/// `p, *, …` policies under `g.match=keyMatch2`).
pub fn key_match2_regex(pattern: &str) -> String {
    if pattern == "*" {
        return "^.*$".to_owned();
    }
    let pattern = pattern.replace("/*", "/.*");
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push('^');
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek().is_some_and(|n| *n != '/') {
            while chars.peek().is_some_and(|n| *n != '/') {
                chars.next();
            }
            out.push_str("[^/]+");
        } else {
            out.push(c);
        }
    }
    out.push('$');
    out
}

/// The regular expression keyMatch3 tests with: `/*` → `/.*`, `{name}` → `[^/]+`, anchored.
pub fn key_match3_regex(pattern: &str) -> String {
    let pattern = pattern.replace("/*", "/.*");
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push('^');
    let mut rest = pattern.as_str();
    while let Some(open) = rest.find('{') {
        // `\{[^/]+?\}`: the shortest run of non-slashes closed by `}`.
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .filter(|&c| c > 0 && !after[..c].contains('/'));
        match close {
            Some(c) => {
                out.push_str(&rest[..open]);
                out.push_str("[^/]+");
                rest = &after[c + 1..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.push('$');
    out
}

pub fn compile(regex: &str) -> Result<Regex, FunctionError> {
    Regex::new(&go_literal_braces(regex))
        .map_err(|e| FunctionError::Regex(regex.to_owned(), e.to_string()))
}

/// Go's RE2 reads a `{` that does not open a repetition (`{n}`, `{n,}`,
/// `{n,m}`) as a literal; regex-lite refuses it. Escaping such braces keeps
/// Go's meaning.
fn go_literal_braces(regex: &str) -> String {
    let bytes = regex.as_bytes();
    let mut out = String::with_capacity(regex.len() + 4);
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\\' && i + 1 < bytes.len() {
            out.push_str(&regex[i..i + 2]);
            i += 2;
            continue;
        }
        match c {
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'{' if !in_class => {
                if is_repetition(&bytes[i..]) {
                    // Copied whole, so the `}` below only ever sees literal braces.
                    let end = i + bytes[i..].iter().position(|&b| b == b'}').unwrap_or(0);
                    out.push_str(&regex[i..=end]);
                    i = end + 1;
                } else {
                    out.push_str("\\{");
                    i += 1;
                }
                continue;
            }
            b'}' if !in_class => {
                out.push_str("\\}");
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = regex[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&regex[i..i + len]);
        i += len;
    }
    out
}

/// `{n}`, `{n,}` or `{n,m}` at the start of `s`.
fn is_repetition(s: &[u8]) -> bool {
    let Some(end) = s.iter().position(|&b| b == b'}') else {
        return false;
    };
    let inner = &s[1..end];
    let mut parts = inner.splitn(2, |&b| b == b',');
    let first = parts.next().unwrap_or_default();
    let digits = |p: &[u8]| p.iter().all(u8::is_ascii_digit);
    !first.is_empty() && digits(first) && parts.next().is_none_or(digits)
}

pub fn key_match2(key: &str, pattern: &str) -> Result<bool, FunctionError> {
    Ok(compile(&key_match2_regex(pattern))?.is_match(key))
}

pub fn key_match3(key: &str, pattern: &str) -> Result<bool, FunctionError> {
    Ok(compile(&key_match3_regex(pattern))?.is_match(key))
}

/// Unanchored, as Go's `regexp.MatchString`.
pub fn regex_match(key: &str, pattern: &str) -> Result<bool, FunctionError> {
    Ok(compile(pattern)?.is_match(key))
}

pub fn ip_match(ip: &str, pattern: &str) -> Result<bool, FunctionError> {
    let ip: IpAddr = ip.parse().map_err(|_| FunctionError::Ip(ip.to_owned()))?;
    if let Ok(net) = pattern.parse::<IpNet>() {
        return Ok(net.contains(&ip));
    }
    let other: IpAddr = pattern
        .parse()
        .map_err(|_| FunctionError::Cidr(pattern.to_owned()))?;
    Ok(ip.to_canonical() == other.to_canonical())
}

/// Glob with doublestar semantics: `*` and `?` stay within a `/`-separated
/// segment, a whole segment `**` spans any number of segments (none too).
pub fn glob_match(path: &str, pattern: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    // matched[j]: the pattern segments read so far match path[..j].
    let mut matched = vec![false; path.len() + 1];
    matched[0] = true;
    for segment in pattern {
        if segment == "**" {
            for j in 1..=path.len() {
                matched[j] = matched[j] || matched[j - 1];
            }
        } else {
            for j in (1..=path.len()).rev() {
                matched[j] =
                    matched[j - 1] && segment_match(segment.as_bytes(), path[j - 1].as_bytes());
            }
            matched[0] = false;
        }
    }
    matched[path.len()]
}

/// One segment: `*` (and a `**` inside a segment) any run, `?` one character,
/// `[...]` a class (with `!` or `^` to negate), `\` escapes.
fn segment_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star_p, mut star_t) = (None, 0);
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    star_p = Some(p);
                    star_t = t;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matches, next)) = class_match(&pattern[p..], text[t]) {
                        if matches {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star_p {
            Some(sp) => {
                star_t += 1;
                t = star_t;
                p = sp;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at the start of `pattern`: whether `c` is in it, and its length.
fn class_match(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let start = i;
    while i < pattern.len() && (pattern[i] != b']' || i == start) {
        if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            found |= (pattern[i]..=pattern[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= pattern[i] == c;
            i += 1;
        }
    }
    (i < pattern.len()).then_some((found != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of Casbin's function tables: the Go reference, including the
    /// rows where pycasbin disagrees with Go.
    #[test]
    fn casbin_reference_rows() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/casbin-reference");
        let mut checked = 0;
        for file in ["functions.tsv", "functions_go_only.tsv"] {
            let Ok(text) = std::fs::read_to_string(format!("{root}/{file}")) else {
                panic!("{root}/{file} is missing");
            };
            for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
                let cols: Vec<&str> = line.split('\t').collect();
                let (function, key, pattern, expected) =
                    (cols[0], cols[1], cols[2], cols[3] == "true");
                let actual = match function {
                    "keyMatch" => key_match(key, pattern),
                    "keyMatch2" => key_match2(key, pattern).unwrap(),
                    "keyMatch3" => key_match3(key, pattern).unwrap(),
                    "regexMatch" => regex_match(key, pattern).unwrap(),
                    "ipMatch" => ip_match(key, pattern).unwrap(),
                    "globMatch" => glob_match(key, pattern),
                    other => panic!("unknown function {other}"),
                };
                assert_eq!(
                    actual, expected,
                    "{function}({key:?}, {pattern:?}) in {file}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 160, "only {checked} rows");
    }

    #[test]
    fn braces_that_are_not_repetitions_are_literal() {
        assert!(regex_match("/{id}", "^/{id}$").unwrap());
        assert!(regex_match("aaa", "^a{3}$").unwrap());
        assert!(regex_match("aaaa", "^a{2,}$").unwrap());
        assert!(!regex_match("a", "^a{2,3}$").unwrap());
        assert!(regex_match("{", "[{]").unwrap());
    }

    #[test]
    fn ip_match_refuses_garbage() {
        assert!(ip_match("not-an-ip", "10.0.0.0/8").is_err());
        assert!(ip_match("10.0.0.1", "nope").is_err());
    }

    #[test]
    fn globs_beyond_the_reference() {
        assert!(glob_match("/a/b/c/d", "/a/**/d"));
        assert!(glob_match("/a/d", "/a/**/d"));
        assert!(!glob_match("/a/b/c", "/a/?"));
        assert!(glob_match("/a/x", "/a/[a-z]"));
        assert!(!glob_match("/a/X", "/a/[!A-Z]"));
    }
}
