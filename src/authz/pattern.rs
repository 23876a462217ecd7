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
    /// The literal bytes before the first `*` or `:name`: compared as a
    /// slice first, which settles most questions (`/api/orders` against
    /// `/api/users/:id`) before any set is built.
    prefix: Box<[u8]>,
    /// The literal bytes after the last `*` or `:name`, compared likewise.
    suffix: Box<[u8]>,
    /// What follows the prefix.
    tokens: Box<[Token]>,
    /// Each byte the pattern names a literal, numbered (NO_SLOT: none).
    slot_of: Box<[u16; 256]>,
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
        let literal = |t: &Token| matches!(t, Token::Byte(_));
        let bytes = |run: &[Token]| -> Box<[u8]> {
            run.iter()
                .filter_map(|t| match t {
                    Token::Byte(b) => Some(*b),
                    _ => None,
                })
                .collect()
        };
        let prefix_len = tokens.iter().take_while(|t| literal(t)).count();
        let suffix_len = tokens[prefix_len..]
            .iter()
            .rev()
            .take_while(|t| literal(t))
            .count();
        let prefix = bytes(&tokens[..prefix_len]);
        let suffix = bytes(&tokens[tokens.len() - suffix_len..]);
        let tokens: Vec<Token> = tokens.split_off(prefix_len);
        let mut slot_of = Box::new([NO_SLOT; 256]);
        let mut slots = 0;
        for token in &tokens {
            if let Token::Byte(b) = *token {
                if slot_of[b as usize] == NO_SLOT {
                    slot_of[b as usize] = slots;
                    slots += 1;
                }
            }
        }
        Some(Self {
            prefix,
            suffix,
            tokens: tokens.into_boxed_slice(),
            slot_of,
        })
    }

    /// Whether `path` matches. The set of path positions the tokens read so
    /// far can end at is a 257-bit set, and each token moves it in a few
    /// word operations: a literal shifts it and keeps the positions where
    /// the path has that byte, `*` fills upward from the lowest, `:name`
    /// fills upward within runs of non-`/` bytes (by a carrying add). So a
    /// match costs about five words per pattern byte, on the stack, with
    /// no backtracking whatever the pattern.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.as_bytes();
        if path.len() > MAX_LEN {
            return false;
        }
        let Some(path) = path.strip_prefix(&*self.prefix) else {
            return false;
        };
        if !path.ends_with(&self.suffix) {
            return false;
        }
        // eq[slot]: the positions j (1-based) where path[j-1] is that byte,
        // for the first TABLED_SLOTS distinct bytes of the pattern (others,
        // rare, are found by a scan when their token comes).
        let mut eq = [[0u64; WORDS]; TABLED_SLOTS];
        let mut not_slash: Bits = [0; WORDS];
        // Positions 0..=len: where a match can end.
        let mut valid: Bits = [0; WORDS];
        for (w, word) in valid.iter_mut().enumerate() {
            let bits = (path.len() + 1).saturating_sub(w * 64).min(64);
            *word = if bits == 64 { !0 } else { (1u64 << bits) - 1 };
        }
        for (i, &b) in path.iter().enumerate() {
            let slot = self.slot_of[b as usize];
            if (slot as usize) < TABLED_SLOTS {
                set(&mut eq[slot as usize], i + 1);
            }
            if b != b'/' {
                set(&mut not_slash, i + 1);
            }
        }
        let mut reached: Bits = [0; WORDS];
        set(&mut reached, 0);
        for token in self.tokens.iter() {
            match *token {
                Token::Byte(b) => {
                    let slot = self.slot_of[b as usize] as usize;
                    let scanned;
                    let eq = match eq.get(slot) {
                        Some(tabled) => tabled,
                        None => {
                            scanned = positions_of(path, b);
                            &scanned
                        }
                    };
                    let shifted = shift_up(&reached);
                    for w in 0..WORDS {
                        reached[w] = shifted[w] & eq[w];
                    }
                }
                Token::Any => {
                    let Some(lowest) = lowest_set(&reached) else {
                        return false;
                    };
                    let (word, bit) = (lowest / 64, lowest % 64);
                    for w in 0..WORDS {
                        reached[w] = match w.cmp(&word) {
                            std::cmp::Ordering::Less => 0,
                            std::cmp::Ordering::Equal => !0u64 << bit,
                            std::cmp::Ordering::Greater => !0,
                        } & valid[w];
                    }
                }
                Token::Segment => {
                    let shifted = shift_up(&reached);
                    let mut first: Bits = [0; WORDS];
                    for w in 0..WORDS {
                        first[w] = shifted[w] & not_slash[w];
                    }
                    // not_slash + first carries through each run of
                    // not-slash bits from every bit of `first` upward: the
                    // bits that change are that fill (and one past it).
                    let sum = add(&not_slash, &first);
                    for w in 0..WORDS {
                        reached[w] = ((sum[w] ^ not_slash[w]) & not_slash[w]) | first[w];
                    }
                }
            }
            if reached.iter().all(|&w| w == 0) {
                return false;
            }
        }
        is_set(&reached, path.len())
    }
}

/// Positions 0..=MAX_LEN, as bits.
const WORDS: usize = (MAX_LEN + 1).div_ceil(64);
type Bits = [u64; WORDS];

/// Distinct literal bytes whose positions are tabled before matching (a
/// pattern rarely has more: 64 × 5 words on the stack).
const TABLED_SLOTS: usize = 64;
const NO_SLOT: u16 = u16::MAX;

fn positions_of(path: &[u8], byte: u8) -> Bits {
    let mut bits = [0; WORDS];
    for (i, &b) in path.iter().enumerate() {
        if b == byte {
            set(&mut bits, i + 1);
        }
    }
    bits
}

fn set(bits: &mut Bits, j: usize) {
    bits[j / 64] |= 1 << (j % 64);
}

fn is_set(bits: &Bits, j: usize) -> bool {
    bits[j / 64] & (1 << (j % 64)) != 0
}

fn shift_up(bits: &Bits) -> Bits {
    let mut out = [0; WORDS];
    let mut carry = 0;
    for w in 0..WORDS {
        out[w] = (bits[w] << 1) | carry;
        carry = bits[w] >> 63;
    }
    out
}

fn lowest_set(bits: &Bits) -> Option<usize> {
    bits.iter()
        .enumerate()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
}

fn add(a: &Bits, b: &Bits) -> Bits {
    let mut out = [0; WORDS];
    let mut carry = false;
    for w in 0..WORDS {
        let (sum, c1) = a[w].overflowing_add(b[w]);
        let (sum, c2) = sum.overflowing_add(u64::from(carry));
        out[w] = sum;
        carry = c1 || c2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same language by the plainest dynamic programme: the oracle.
    fn matches_slowly(pattern: &ModulePattern, path: &str) -> bool {
        let path = path.as_bytes();
        if path.len() > MAX_LEN {
            return false;
        }
        // The whole pattern, prefix included, read token by token.
        let all: Vec<Token> = pattern
            .prefix
            .iter()
            .map(|b| Token::Byte(*b))
            .chain(pattern.tokens.iter().copied())
            .collect();
        let mut reached = vec![false; path.len() + 1];
        reached[0] = true;
        for token in &all {
            let before = reached.clone();
            for j in 0..=path.len() {
                reached[j] = match *token {
                    Token::Byte(b) => j > 0 && before[j - 1] && path[j - 1] == b,
                    Token::Any => (0..=j).any(|k| before[k]),
                    Token::Segment => {
                        j > 0 && (0..j).any(|k| before[k] && path[k..j].iter().all(|&c| c != b'/'))
                    }
                };
            }
        }
        reached[path.len()]
    }

    proptest::proptest! {
        #[test]
        fn the_bit_parallel_matcher_agrees_with_the_plain_one(
            pattern in "/[ab/*:.]{0,40}",
            path in "[ab/.:]{0,70}",
        ) {
            if let Some(compiled) = ModulePattern::parse(&pattern) {
                proptest::prop_assert_eq!(compiled.matches(&path), matches_slowly(&compiled, &path));
                let slash = format!("/{path}");
                proptest::prop_assert_eq!(compiled.matches(&slash), matches_slowly(&compiled, &slash));
            }
        }
    }

    #[test]
    fn bytes_beyond_the_table_still_match() {
        let many: String = (0x21u8..0x7e)
            .filter(|b| !matches!(b, b'*' | b':' | b'/'))
            .map(char::from)
            .collect();
        assert!(many.len() > TABLED_SLOTS);
        let pattern = ModulePattern::parse(&format!("/{many}*")).unwrap();
        assert!(pattern.matches(&format!("/{many}/tail")));
        assert!(!pattern.matches(&format!("/{}", &many[1..])));
        assert!(matches_slowly(&pattern, &format!("/{many}/tail")));
    }

    #[test]
    fn long_patterns_and_paths_agree_across_word_boundaries() {
        let path = format!("/{}", "ab/".repeat(85));
        for pattern in [
            format!("/{}*", "ab/".repeat(40)),
            format!("/{}", ":x/".repeat(85)),
            format!("/{}", "*b".repeat(127)),
            format!("/{}*", "a".repeat(200)),
            "/*/:last".to_owned(),
            // More distinct bytes than are tabled.
            format!(
                "/{}*",
                (0x21u8..0x7e)
                    .filter(|b| *b != b'*' && *b != b':' && *b != b'/')
                    .map(char::from)
                    .collect::<String>()
            ),
        ] {
            let compiled = ModulePattern::parse(&pattern).unwrap();
            assert_eq!(
                compiled.matches(&path),
                matches_slowly(&compiled, &path),
                "{pattern}"
            );
        }
    }

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
