//! Compiled patterns: command names, argument patterns and path globs.
//!
//! Globs are globset globs with `literal_separator(false)`, so `*` crosses
//! `/` (an argument like `origin/main` is one word to a human). `re:` patterns
//! use the `regex` crate and are searched, not anchored.

use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher};
use regex::{Regex, RegexBuilder};

/// Prefix that turns an argument pattern into a regular expression.
pub const REGEX_PREFIX: &str = "re:";

/// Compiled-size cap for `re:` patterns: far above any real policy, low
/// enough that a hostile file cannot make the daemon build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 2 << 20;

/// Builds a glob with the policy's syntax.
pub(crate) fn glob(text: &str) -> Result<Glob, String> {
    GlobBuilder::new(text)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid glob `{text}`: {}", e.kind()))
}

/// Whether `text` uses glob syntax (and so is not a literal name).
pub(crate) fn has_glob_meta(text: &str) -> bool {
    text.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// The name a command is matched by: its basename, as the shim was invoked.
pub(crate) fn command_name(command: &str) -> &str {
    command.rsplit('/').next().unwrap_or(command)
}

/// A rule's `command`: an exact name or a glob over names.
#[derive(Debug, Clone)]
pub(crate) enum CommandMatcher {
    Exact(String),
    Glob(LazyGlob),
}

impl CommandMatcher {
    pub(crate) fn compile(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("empty `command`; name the command this rule gates".into());
        }
        if text.contains('/') {
            return Err(format!("`command: {text}` is a path; rules match the command's name (e.g. `git`)"));
        }
        if has_glob_meta(text) {
            Ok(CommandMatcher::Glob(LazyGlob::new(glob(text)?)))
        } else {
            Ok(CommandMatcher::Exact(text.to_string()))
        }
    }

    pub(crate) fn is_match(&self, name: &str) -> bool {
        match self {
            CommandMatcher::Exact(want) => want == name,
            CommandMatcher::Glob(g) => g.is_match(name),
        }
    }

    pub(crate) fn is_glob(&self) -> bool {
        matches!(self, CommandMatcher::Glob(_))
    }
}

/// A glob parsed (so a bad one is refused at load) but compiled to its
/// matcher only when first used: compiling every glob of a policy costs
/// milliseconds at every `clawkeep run`, most of them never consulted.
#[derive(Debug, Clone)]
pub(crate) struct LazyGlob {
    glob: Glob,
    matcher: std::sync::OnceLock<GlobMatcher>,
}

impl LazyGlob {
    fn new(glob: Glob) -> Self {
        LazyGlob { glob, matcher: std::sync::OnceLock::new() }
    }

    pub(crate) fn is_match(&self, subject: &str) -> bool {
        self.matcher.get_or_init(|| self.glob.compile_matcher()).is_match(subject)
    }
}

/// One entry of a rule's `args`.
#[derive(Debug, Clone)]
pub(crate) enum ArgPattern {
    Glob { text: String, matcher: LazyGlob },
    Regex { text: String, regex: Regex },
}

impl ArgPattern {
    pub(crate) fn compile(text: &str) -> Result<Self, String> {
        if let Some(expr) = text.strip_prefix(REGEX_PREFIX) {
            let regex = RegexBuilder::new(expr).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| {
                // regex's syntax errors span several lines; the last one says what is wrong.
                let why = e.to_string();
                let why = why.lines().last().unwrap_or_default().trim_start_matches("error: ").to_string();
                format!("invalid regex `{text}`: {why}")
            })?;
            Ok(ArgPattern::Regex { text: text.to_string(), regex })
        } else {
            Ok(ArgPattern::Glob { text: text.to_string(), matcher: LazyGlob::new(glob(text)?) })
        }
    }

    pub(crate) fn text(&self) -> &str {
        match self {
            ArgPattern::Glob { text, .. } | ArgPattern::Regex { text, .. } => text,
        }
    }

    pub(crate) fn is_match(&self, subject: &str) -> bool {
        match self {
            ArgPattern::Glob { matcher, .. } => matcher.is_match(subject),
            ArgPattern::Regex { regex, .. } => regex.is_match(subject),
        }
    }
}

/// Finds the first pattern that matches the joined argument string or any
/// single argument; returns it with the text it matched.
pub(crate) fn match_args<'p, 's>(patterns: &'p [ArgPattern], joined: &'s str, args: &'s [String]) -> Option<(&'p ArgPattern, &'s str)> {
    patterns.iter().find_map(|p| {
        if p.is_match(joined) {
            return Some((p, joined));
        }
        args.iter().find(|a| p.is_match(a)).map(|a| (p, a.as_str()))
    })
}

/// Directory globs (`allowed_paths`, a rule's `cwd`). A glob ending in `/**`
/// or `/*` also matches the directory itself, so `/workspace/**` admits an
/// agent whose cwd is `/workspace` (as Clawrden's `/app/*` admits `/app`).
#[derive(Debug, Clone, Default)]
pub(crate) struct PathGlobs {
    patterns: Vec<(String, Vec<GlobMatcher>)>,
}

impl PathGlobs {
    pub(crate) fn compile(texts: &[String]) -> Result<Self, String> {
        let mut patterns = Vec::with_capacity(texts.len());
        for text in texts {
            patterns.push((text.clone(), path_matchers(text)?));
        }
        Ok(PathGlobs { patterns })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the (already normalised) path matches one glob.
    pub(crate) fn is_match(&self, path: &Path) -> bool {
        self.patterns.iter().any(|(_, ms)| ms.iter().any(|m| m.is_match(path)))
    }
}

/// Checks one directory glob; used while deserialising so an error carries
/// the entry's own line and column.
pub(crate) fn check_path_glob(text: &str) -> Result<(), String> {
    path_matchers(text).map(drop)
}

fn path_matchers(text: &str) -> Result<Vec<GlobMatcher>, String> {
    if text.is_empty() {
        return Err("empty glob".into());
    }
    let trimmed = if text.len() > 1 { text.trim_end_matches('/') } else { text };
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let mut out = vec![glob(trimmed)?.compile_matcher()];
    for suffix in ["/**", "/*"] {
        if let Some(dir) = trimmed.strip_suffix(suffix) {
            out.push(glob(if dir.is_empty() { "/" } else { dir })?.compile_matcher());
        }
    }
    Ok(out)
}

/// Resolves `.` and `..` and drops trailing slashes without touching the
/// filesystem, so `/workspace/../etc` cannot pass as `/workspace/**`.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut root: Option<Component<'_>> = None;
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => root = Some(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if root.is_none() {
                    // A relative path may climb; an absolute one stops at `/`.
                    parts.push(part.as_os_str());
                }
            }
            Component::Normal(name) => parts.push(name),
        }
    }
    let mut out = PathBuf::new();
    if let Some(root) = root {
        out.push(root.as_os_str());
    }
    out.extend(parts);
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs_cross_slashes_and_regexes_are_searched() {
        let g = ArgPattern::compile("push *").unwrap();
        assert!(g.is_match("push origin/main"));
        assert!(!g.is_match("git push origin"));
        let r = ArgPattern::compile(r"re:--force\b").unwrap();
        assert!(r.is_match("push origin --force"));
        assert!(!r.is_match("push origin --forceful"));
        let anchored = ArgPattern::compile("re:^push$").unwrap();
        assert!(!anchored.is_match("push origin"));
    }

    #[test]
    fn match_args_tries_the_joined_string_then_each_argument() {
        let pats = vec![ArgPattern::compile("-rf").unwrap(), ArgPattern::compile("push *").unwrap()];
        let a = args(&["push", "origin"]);
        let joined = a.join(" ");
        let (p, what) = match_args(&pats, &joined, &a).unwrap();
        assert_eq!((p.text(), what), ("push *", "push origin"));
        let a = args(&["-rf", "build"]);
        let joined = a.join(" ");
        let (p, what) = match_args(&pats, &joined, &a).unwrap();
        assert_eq!((p.text(), what), ("-rf", "-rf"));
        let a = args(&["-r", "-f"]);
        assert!(match_args(&pats, &a.join(" "), &a).is_none());
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern_named() {
        let e = ArgPattern::compile("re:(").unwrap_err();
        assert!(e.starts_with("invalid regex `re:(`: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = ArgPattern::compile("[a-").unwrap_err();
        assert!(e.starts_with("invalid glob `[a-`"), "{e}");
    }

    #[test]
    fn commands_are_names_or_globs() {
        assert!(CommandMatcher::compile("").is_err());
        assert!(CommandMatcher::compile("  ").is_err());
        assert!(CommandMatcher::compile("/usr/bin/git").is_err());
        let py = CommandMatcher::compile("python3*").unwrap();
        assert!(py.is_glob() && py.is_match("python3.11") && !py.is_match("python"));
        let git = CommandMatcher::compile("git").unwrap();
        assert!(!git.is_glob() && git.is_match("git") && !git.is_match("git2"));
        assert_eq!(command_name("/usr/bin/git"), "git");
        assert_eq!(command_name("git"), "git");
    }

    #[test]
    fn path_globs_admit_the_directory_itself() {
        let g = PathGlobs::compile(&args(&["/workspace/**", "/app/*", "/srv/"])).unwrap();
        for ok in ["/workspace", "/workspace/a/b", "/app", "/app/x/y", "/srv"] {
            assert!(g.is_match(Path::new(ok)), "{ok}");
        }
        for no in ["/workspacex", "/etc", "/ap", "/srv/x"] {
            assert!(!g.is_match(Path::new(no)), "{no}");
        }
        assert!(PathGlobs::compile(&args(&["/**"])).unwrap().is_match(Path::new("/")));
        assert!(PathGlobs::compile(&args(&[""])).is_err());
    }

    #[test]
    fn normalize_is_lexical_and_never_climbs_above_root() {
        let n = |p: &str| normalize(Path::new(p));
        assert_eq!(n("/workspace/../etc"), PathBuf::from("/etc"));
        assert_eq!(n("/workspace/./a/"), PathBuf::from("/workspace/a"));
        assert_eq!(n("/../../x"), PathBuf::from("/x"));
        assert_eq!(n("a/../../b"), PathBuf::from("../b"));
        assert_eq!(n("../.."), PathBuf::from("../.."));
        assert_eq!(n(""), PathBuf::from("."));
    }
}
