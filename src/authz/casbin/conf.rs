//! Casbin model files: `[section]` headers and `key = value` lines, as
//! Casbin's Go parser reads them: `#` and `;` start comments (whole lines,
//! and trailing ones outside string literals), a trailing `\` continues a
//! value on the next line, and the last line need not end with a newline.

use std::collections::BTreeMap;

use super::CasbinError;

/// `section → key → value`.
pub type Sections = BTreeMap<String, BTreeMap<String, String>>;

/// The line up to a comment that starts outside a quoted string.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#' | ';') => return &line[..i],
            (None, _) => {}
        }
    }
    line
}

pub fn parse(text: &str) -> Result<Sections, CasbinError> {
    let mut sections = Sections::new();
    let mut section: Option<String> = None;
    let mut pending = String::new();
    let mut pending_line = 0;
    for (number, raw) in text.lines().enumerate() {
        let line = strip_comment(raw.trim()).trim();
        if pending.is_empty() {
            pending_line = number + 1;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued.trim());
            pending.push(' ');
            continue;
        }
        let line = if pending.is_empty() {
            line.to_owned()
        } else {
            let joined = format!("{pending}{line}");
            pending.clear();
            joined
        };
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_owned());
            sections.entry(name.trim().to_owned()).or_default();
            continue;
        }
        let Some(section) = &section else {
            return Err(CasbinError::Model(format!(
                "line {pending_line}: {line:?} is outside any [section]"
            )));
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(CasbinError::Model(format!(
                "line {pending_line}: expected key = value, found {line:?}"
            )));
        };
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    if !pending.is_empty() {
        return Err(CasbinError::Model(
            "the last line ends with a continuation \\".into(),
        ));
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_continuations_and_no_final_newline() {
        let text = "[request_definition]\nr = sub, obj, act ; Request definition\n\n# Matchers\n[matchers]\n\
                    m = r.sub == p.sub && r.obj == \"#not-a-comment\" \\\n && r.act == p.act";
        let s = parse(text).unwrap();
        assert_eq!(s["request_definition"]["r"], "sub, obj, act");
        assert_eq!(
            s["matchers"]["m"],
            "r.sub == p.sub && r.obj == \"#not-a-comment\" && r.act == p.act"
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert!(parse("r = sub").unwrap_err().to_string().contains("line 1"));
        assert!(
            parse("[x]\nnonsense")
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
    }
}
