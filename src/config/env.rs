//! `${NAME}` substitution in configuration string values.
//!
//! `${NAME}` is replaced by the environment variable `NAME` (letters, digits and `_`, not starting
//! with a digit); `$${` writes a literal `${`; any other `$` is kept as is. Substituted values are
//! not expanded again.

/// Looks up an environment variable; `None` when it is unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment (a variable that is not valid UTF-8 counts as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("environment variable `{0}` is not set")]
    Unset(String),
    #[error("`${{` without a closing `}}` (write `$${{` for a literal `${{`)")]
    Unterminated,
    #[error("`${{{0}}}` is not a valid environment variable name (letters, digits and `_`)")]
    BadName(String),
}

/// Replaces every `${NAME}` of `input` with the value `env` gives for `NAME`.
pub fn expand(input: &str, env: EnvLookup<'_>) -> Result<String, EnvError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let at = &rest[dollar..];
        if let Some(after) = at.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = at.strip_prefix("${") {
            let end = after.find('}').ok_or(EnvError::Unterminated)?;
            let name = &after[..end];
            if !is_var_name(name) {
                return Err(EnvError::BadName(name.to_owned()));
            }
            out.push_str(&env(name).ok_or_else(|| EnvError::Unset(name.to_owned()))?);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &at[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("${TOKEN}".into()),
            _ => None,
        }
    }

    fn run(input: &str) -> Result<String, EnvError> {
        expand(input, &env)
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(run("Bearer ${TOKEN}").as_deref(), Ok("Bearer s3cret"));
        assert_eq!(run("${TOKEN}${TOKEN}").as_deref(), Ok("s3crets3cret"));
        assert_eq!(run("a${EMPTY}b").as_deref(), Ok("ab"));
        assert_eq!(run("plain").as_deref(), Ok("plain"));
        assert_eq!(run("é${TOKEN}é").as_deref(), Ok("és3creté"));
    }

    #[test]
    fn does_not_expand_substituted_values() {
        assert_eq!(run("${NESTED}").as_deref(), Ok("${TOKEN}"));
    }

    #[test]
    fn escapes_and_lone_dollars() {
        assert_eq!(run("$${TOKEN}").as_deref(), Ok("${TOKEN}"));
        assert_eq!(run("$$${TOKEN}").as_deref(), Ok("$${TOKEN}"));
        assert_eq!(run("cost: 5$ or $x $").as_deref(), Ok("cost: 5$ or $x $"));
        assert_eq!(run("$$").as_deref(), Ok("$$"));
    }

    #[test]
    fn reports_errors() {
        assert_eq!(run("${MISSING}"), Err(EnvError::Unset("MISSING".into())));
        assert_eq!(run("x${TOKEN"), Err(EnvError::Unterminated));
        assert_eq!(run("${}"), Err(EnvError::BadName(String::new())));
        assert_eq!(run("${1A}"), Err(EnvError::BadName("1A".into())));
        assert_eq!(run("${A-B}"), Err(EnvError::BadName("A-B".into())));
        assert_eq!(
            EnvError::Unset("X".into()).to_string(),
            "environment variable `X` is not set"
        );
        assert_eq!(
            EnvError::BadName("a b".into()).to_string(),
            "`${a b}` is not a valid environment variable name (letters, digits and `_`)"
        );
    }
}
