//! Glob patterns as Redis matches them (`stringmatchlen` in `util.c`), for
//! pattern groups (`super::Mailbox::join_pattern`, RESP `PSUBSCRIBE`).
//!
//! * `*` any run of bytes (also empty), `?` any one byte;
//! * `[abc]`, `[a-z]`, `[^a]` a class (ranges may be written backwards,
//!   `\` escapes inside a class, an unclosed class runs to the pattern's end);
//! * `\x` the byte `x` itself.
//!
//! Byte-wise and case-sensitive, like Redis. Recursion is bounded by the
//! number of `*` in the pattern; consecutive stars collapse into one.

/// Whether `text` matches the glob `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, text, &mut skip_longer, 0)
}

/// Most nested `*` a pattern may use before it stops matching (Redis
/// returns "no match" past 1000 nesting levels too).
const MAX_NESTING: usize = 1000;

fn match_from(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool, nesting: usize) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true; // a trailing star matches the rest
                }
                while !s.is_empty() {
                    if match_from(&p[1..], s, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        // The rest failed for lack of text: a shorter
                        // text cannot do better (Redis' `skipLongerMatches`).
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                let (end, hit) = class(p, s[0]);
                if !hit {
                    return false;
                }
                s = &s[1..];
                p = &p[end..];
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if p[0] != s[0] {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if c != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    if p.is_empty() && s.is_empty() {
        return true;
    }
    false
}

/// The class opening `p` (`p[0] == b'['`) against byte `b`: the index of
/// its closing `]` (or of the pattern's last byte when it is unclosed, as
/// Redis steps back), and whether `b` is in it.
fn class(p: &[u8], b: u8) -> (usize, bool) {
    let mut i = 1;
    let not = p.get(i) == Some(&b'^');
    if not {
        i += 1;
    }
    let mut hit = false;
    loop {
        if i >= p.len() {
            i = p.len() - 1;
            break;
        }
        if p[i] == b'\\' && p.len() - i >= 2 {
            i += 1;
            hit |= p[i] == b;
        } else if p[i] == b']' {
            break;
        } else if p.len() - i >= 3 && p[i + 1] == b'-' {
            let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
            hit |= (lo..=hi).contains(&b);
            i += 2;
        } else {
            hit |= p[i] == b;
        }
        i += 1;
    }
    (i, hit != not)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_question_marks_match_like_redis() {
        assert!(!matches(b"*", b"")); // Redis: a star needs one byte when it is all there is to match
        assert!(matches(b"*", b"anything"));
        assert!(matches(b"n*", b"news"));
        assert!(matches(b"n*s", b"news"));
        assert!(!matches(b"n*s", b"newt"));
        assert!(matches(b"h?llo", b"hello"));
        assert!(!matches(b"h?llo", b"hllo"));
        assert!(matches(b"a**b", b"ab"));
        assert!(matches(b"*.*.*", b"a.b.c"));
        assert!(!matches(b"*.*.*", b"a.b"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes_match_like_redis() {
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[ae]llo", b"hillo"));
        assert!(matches(b"h[^e]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"h[b-a]llo", b"hbllo"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"[\\]]", b"]"));
        assert!(matches(b"x[ab", b"xa"));
        assert!(!matches(b"x[ab", b"xab"));
    }

    #[test]
    fn a_pathological_pattern_ends_quickly() {
        let text = vec![b'a'; 64];
        assert!(!matches(b"a*a*a*a*a*a*a*a*a*a*a*a*b", &text));
    }
}
