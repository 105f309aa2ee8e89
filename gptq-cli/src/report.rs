//! An error and its causes as one line, each thing said once.
//!
//! Library errors often both print their cause and hand it on as their
//! `source()` (gptq-core's I/O error prints "FILE: OS message" and its source
//! is the OS error), and a context line often names what the error it wraps
//! names too ("cannot load FILE" above "FILE: OS message"). Joining the chain
//! naively says things twice; this joins it without the repeats.

/// `e` and its causes joined with ": ", leaving out a cause its parent already
/// quoted in full, and the start of a cause that repeats the end of the line.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        let rest = repeated_head(&line, &text).unwrap_or(&text);
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(rest);
    }
    line
}

/// When `text` is `HEAD: REST` and `line` ends with `HEAD` (the longest such
/// head), `REST`.
fn repeated_head<'t>(line: &str, text: &'t str) -> Option<&'t str> {
    text.match_indices(": ")
        .map(|(i, sep)| (&text[..i], &text[i + sep.len()..]))
        .filter(|(head, rest)| !head.is_empty() && !rest.is_empty() && line.ends_with(head))
        .map(|(_, rest)| rest)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// Like gptq-core's I/O error: prints its source and returns it.
    #[derive(Debug)]
    struct Quoting(std::io::Error);

    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "/x/model.gguf: {}", self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn not_found() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn a_quoted_source_is_said_once() {
        let os = not_found().to_string();
        let e = anyhow::Error::new(Quoting(not_found()));
        assert_eq!(error_line(&e), format!("/x/model.gguf: {os}"));
    }

    #[test]
    fn a_context_naming_the_file_is_not_repeated() {
        let os = not_found().to_string();
        let e = Err::<(), _>(Quoting(not_found()))
            .context("cannot load /x/model.gguf")
            .unwrap_err();
        assert_eq!(error_line(&e), format!("cannot load /x/model.gguf: {os}"));
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let e = Err::<(), _>(not_found())
            .context("cannot read prompt file p.txt")
            .unwrap_err();
        assert_eq!(
            error_line(&e),
            format!("cannot read prompt file p.txt: {}", not_found())
        );
        let e = anyhow::anyhow!("tensor 'a': bad: shape").context("model: x");
        assert_eq!(error_line(&e), "model: x: tensor 'a': bad: shape");
    }
}
