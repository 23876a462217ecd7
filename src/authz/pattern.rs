//! Path modules as patterns: memberd's own small syntax, not regular
//! expressions.
//!
//! - `*` matches any run of characters, `/` included (`/api/*`);
//! - `:name` at the start of a segment matches one non-empty segment
//!   (`/api/users/:id`);
//! - every other character matches itself: `.`, `|`, `(`, `{` are literal.
//!
//! It covers what Casbin's keyMatch2 is used for in practice, and nothing an
//! administrator writes can make a check slow: a pattern is at most 256
//! bytes, a module 256, and matching walks the two together once (no
//! backtracking), on the stack. A regular expression engine was the wrong
//! tool here: it made `|` an alternation (`/x|memberd*` matched `memberd`)
//! and let `{0,2000}` repetitions cost milliseconds per check.

/// The longest module, hence pattern and matched path (bytes).
pub const MAX_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `*`
    Any,
    /// `:name`
    Segment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulePattern {
    tokens: Box<[Token]>,
}

/// Whether a module is a pattern rather than a name to compare.
pub fn is_pattern(module: &str) -> bool {
    module.starts_with('/') && (module.contains('*') || module.contains("/:"))
}

impl ModulePattern {
    /// The pattern a module stands for; `None` when it is compared as is
    /// (not a path, no `*` or `:name`, or longer than any module may be).
    pub fn parse(module: &str) -> Option<Self> {
        if !is_pattern(module) || module.len() > MAX_LEN {
            return None;
        }
        let bytes = module.as_bytes();
        let mut tokens = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'*' => {
                    // `**` is `*`: both match any run.
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                    i += 1;
                }
                b':' if i > 0
                    && bytes[i - 1] == b'/'
                    && bytes.get(i + 1).is_some_and(|&b| b != b'/') =>
                {
                    while i < bytes.len() && bytes[i] != b'/' {
                        i += 1;
                    }
                    tokens.push(Token::Segment);
                }
                b => {
                    tokens.push(Token::Byte(b));
                    i += 1;
                }
            }
        }
        Some(Self {
            tokens: tokens.into_boxed_slice(),
        })
    }

    /// Whether `path` matches, in time linear in the product of the two
    /// lengths (both at most [`MAX_LEN`]) and without allocating.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.as_bytes();
        if path.len() > MAX_LEN {
            return false;
        }
        // reached[j]: the tokens read so far match path[..j].
        let mut reached = [false; MAX_LEN + 1];
        reached[0] = true;
        let reached = &mut reached[..=path.len()];
        for token in self.tokens.iter() {
            match *token {
                Token::Byte(b) => {
                    for j in (1..reached.len()).rev() {
                        reached[j] = reached[j - 1] && path[j - 1] == b;
                    }
                    reached[0] = false;
                }
                Token::Any => {
                    for j in 1..reached.len() {
                        reached[j] = reached[j] || reached[j - 1];
                    }
                }
                Token::Segment => {
                    // One or more bytes that are not `/`.
                    let mut before = reached[0];
                    reached[0] = false;
                    for j in 1..reached.len() {
                        let was = reached[j];
                        reached[j] = (before || reached[j - 1]) && path[j - 1] != b'/';
                        before = was;
                    }
                }
            }
            if !reached.iter().any(|&r| r) {
                return false;
            }
        }
        reached[path.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        ModulePattern::parse(pattern)
            .unwrap_or_else(|| panic!("{pattern} is a pattern"))
            .matches(path)
    }

    #[test]
    fn stars_and_segments() {
        assert!(matches("/api/*", "/api/users/7"));
        assert!(matches("/api/*", "/api/"));
        assert!(!matches("/api/*", "/api"));
        assert!(matches("/api/users/:id", "/api/users/7"));
        assert!(!matches("/api/users/:id", "/api/users/"));
        assert!(!matches("/api/users/:id", "/api/users/7/keys"));
        assert!(matches("/api/users/:id/keys", "/api/users/7/keys"));
        assert!(matches("/a/:x/b/*", "/a/1/b/c/d"));
        assert!(matches("/files/*.pdf", "/files/a/b.pdf"));
        assert!(!matches("/files/*.pdf", "/files/a/b.pdfx"));
    }

    #[test]
    fn regular_expression_syntax_is_literal() {
        // The finding: `/x|memberd*` was an alternation that matched `memberd`.
        assert!(!matches("/x|memberd*", "memberd"));
        assert!(!matches("/x|memberd*", "/x"));
        assert!(matches("/x|memberd*", "/x|memberd"));
        assert!(!matches("/a.c/*", "/abc/d"));
        assert!(matches("/a.c/*", "/a.c/d"));
        assert!(!matches("/(*", "/x"));
        assert!(matches("/(*", "/(x"));
        assert!(matches("/.{0,2}*", "/.{0,2}"));
        assert!(!matches("/.{0,2}*", "/ab"));
    }

    #[test]
    fn names_are_not_patterns() {
        assert!(ModulePattern::parse("memberd").is_none());
        assert!(ModulePattern::parse("/api/users").is_none());
        assert!(ModulePattern::parse("billing*").is_none());
        assert!(ModulePattern::parse(&format!("/{}*", "a".repeat(300))).is_none());
    }

    #[test]
    fn heavy_patterns_are_literal() {
        // The finding's pattern made 1,000 checks take 2 s as a regular
        // expression; here its braces are text, and matching is bounded by
        // construction (tokens × path bytes).
        let pattern = ModulePattern::parse("/.{0,2000}.{0,2000}x*").unwrap();
        assert!(!pattern.matches(&format!("/{}", "a".repeat(255))));
        assert!(pattern.matches("/.{0,2000}.{0,2000}xyz"));
        let stars = ModulePattern::parse(&format!("/{}", "*a".repeat(127))).unwrap();
        assert!(!stars.matches(&format!("/{}", "a".repeat(126))));
        assert!(stars.matches(&format!("/{}", "a".repeat(127))));
    }
}
