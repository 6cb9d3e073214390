//! The module layering of `src/`, enforced by `cargo test --test layers` (std only: the
//! sources are read as text by a small tokenizer). It collects the paths that name crate modules
//! (`crate::…`, `super::…`, `self::…`; `scalable_api::…` in main.rs) outside comments and
//! strings, and fails on a cycle among top-level modules, a cycle among the sibling modules of
//! one directory, an import between top-level modules that [`LAYERS`] does not allow, and a
//! top-level module missing from [`LAYERS`].
//!
//! A path to an item resolves, through the `use` declarations of the module it names, to the
//! module that defines it (`super::Page` is `db::repo::users` given `pub use users::Page;`
//! in db/repo/mod.rs). Parent <-> child references are not checked. lib.rs and main.rs are the root:
//! their imports are not checked, nor are paths to items they define (`crate::AppState`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// What a top-level module may import.
enum Allow {
    AnyExcept(&'static [&'static str]),
    Only(&'static [&'static str]),
}
use Allow::{AnyExcept, Only};

/// The allowed imports between the top-level modules of `src/`: the single source of truth for
/// the layering, mirrored in docs/architecture.md (change both together). A module missing here
/// fails the test, so a new module is placed in a layer on purpose. Cycles fail even between
/// modules this table lets import each other.
#[rustfmt::skip]
const LAYERS: &[(&str, Allow)] = &[
    // "Anything except main": main.rs is the binary, not a module, so nothing is excluded.
    ("http", AnyExcept(&[])),
    ("graphql", AnyExcept(&["http"])),
    ("operations", Only(&["cache", "db", "domain", "auth", "error", "config", "telemetry", "traffic"])),
    ("cache", Only(&["db", "domain", "error", "config", "telemetry", "traffic"])),
    ("db", Only(&["domain", "error", "config", "telemetry", "traffic"])),
    // The demo data's password is hashed by the service's own hasher.
    ("admin", Only(&["db", "domain", "auth", "error", "config", "telemetry"])),
    ("auth", Only(&["domain", "error", "config", "telemetry"])),
    ("traffic", Only(&["error", "config", "telemetry"])),
    ("telemetry", Only(&["config"])),
    ("domain", Only(&["error"])),
    ("error", Only(&[])),
    ("config", Only(&[])),
];

#[test]
fn src_follows_the_layer_table() {
    let mut sources = Vec::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    read_tree(&src, "", &mut sources);
    let report = render(&check(sources, LAYERS));
    assert!(report.is_empty(), "src/ breaks its layering:\n{report}");
}

fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Words, `::` and other punctuation, each with its 1-based line. Comments (nested block
/// comments too), strings, raw strings and char literals are skipped.
fn tokenize(text: &str) -> Vec<(String, usize)> {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or(' ');
    let find = |from: usize, pat: &str| {
        let pat: Vec<char> = pat.chars().collect();
        let rest = c.get(from..).unwrap_or_default();
        let hit = rest.windows(pat.len()).position(|w| w == pat);
        hit.map_or(c.len(), |p| from + p + pat.len())
    };
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    while i < c.len() {
        let start = i;
        i = match (c[i], at(i + 1)) {
            ('/', '/') => i + c[i..].iter().take_while(|&&ch| ch != '\n').count(),
            ('/', '*') => {
                let (mut depth, mut j) = (1, i + 2);
                while depth > 0 && j < c.len() {
                    match (c[j], at(j + 1)) {
                        ('/', '*') => (depth, j) = (depth + 1, j + 2),
                        ('*', '/') => (depth, j) = (depth - 1, j + 2),
                        _ => j += 1,
                    }
                }
                j
            }
            ('"', _) => {
                let mut j = i + 1;
                while j < c.len() && c[j] != '"' {
                    j += if c[j] == '\\' { 2 } else { 1 };
                }
                j + 1
            }
            ('\'', '\\') => find(i + 3, "'"),
            ('\'', _) if at(i + 2) == '\'' => i + 3, // a char; `'a` is a lifetime
            (ch, _) if word_char(ch) => {
                let end = i + c[i..].iter().take_while(|&&ch| word_char(ch)).count();
                let word: String = c[i..end].iter().collect();
                let hashes = (end..c.len()).take_while(|&j| c[j] == '#').count();
                if matches!(word.as_str(), "r" | "br" | "cr") && at(end + hashes) == '"' {
                    find(end + hashes + 1, &format!("\"{}", "#".repeat(hashes)))
                } else {
                    out.push((word, line));
                    end
                }
            }
            (ch, next) => {
                let len = 1 + usize::from(ch == ':' && next == ':'); // `::` is one token
                if !ch.is_whitespace() {
                    out.push((c[i..i + len].iter().collect(), line));
                }
                i + len
            }
        }
        .min(c.len());
        line += c[start..i].iter().filter(|&&ch| ch == '\n').count();
    }
    out
}

/// A leaf of a use tree, or an expression path: its segments as written, the name it binds
/// (`as` renames it), and the line of its last segment.
type Leaf = (Vec<String>, String, usize);
type Tokens = [(String, usize)];

/// Parses the path or use tree (`a::{b, c::{self, D as E}, *}`) at `t[i]`; returns its end.
fn parse_tree(t: &Tokens, mut i: usize, prefix: &[String], out: &mut Vec<Leaf>) -> usize {
    let tok = |i: usize| t.get(i).map_or("", |x| x.0.as_str());
    let mut segs = prefix.to_vec();
    loop {
        match tok(i) {
            "{" => {
                i += 1;
                while !matches!(tok(i), "}" | "") {
                    let comma = usize::from(tok(i) == ",");
                    i = parse_tree(t, i + comma, &segs, out).max(i + 1);
                }
                return i + 1;
            }
            w if w == "*" || w.starts_with(word_char) => segs.push(w.to_string()),
            _ => break,
        }
        i += 1;
        if segs.last().is_some_and(|s| s == "*") || tok(i) != "::" || tok(i + 1) == "<" {
            break;
        }
        i += 1;
    }
    if segs.len() > prefix.len() {
        if segs.len() > 1 && segs[segs.len() - 1] == "self" {
            segs.pop(); // `a::{self}` is `a`
        }
        let (line, mut alias) = (t[i - 1].1, segs[segs.len() - 1].clone());
        if tok(i) == "as" {
            (alias, i) = (tok(i + 1).to_string(), i + 2);
        }
        out.push((segs, alias, line));
    }
    i
}

/// A file's references to crate paths (absolute, without `crate`; as written; line), and what
/// its file-level `use` declarations bind (name -> absolute path).
#[derive(Default)]
struct Parsed {
    refs: Vec<(Vec<String>, String, usize)>,
    imports: BTreeMap<String, Vec<String>>,
}

/// `segs` made absolute from `module`. A path starting with another name is relative: a child
/// module, or else a local item or an extern crate, which resolve to `module` itself. `None`
/// when `super` climbs above the crate.
fn absolute(segs: &[String], module: &[String]) -> Option<Vec<String>> {
    let (mut base, mut rest) = (module.to_vec(), segs);
    match segs.first()?.as_str() {
        "crate" | "scalable_api" => (base, rest) = (Vec::new(), &segs[1..]),
        "self" => rest = &segs[1..],
        _ => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
    }
    Some([base.as_slice(), rest].concat())
}

/// Parses the file of `module`; `bin` is `main.rs`, where `scalable_api::` names this crate.
fn parse_file(text: &str, module: &[String], bin: bool) -> Parsed {
    let t = tokenize(text);
    let is_start = |w: &str| matches!(w, "crate" | "super" | "self") || bin && w == "scalable_api";
    let tok = |i: usize| t.get(i).map_or("", |x| x.0.as_str());
    let (mut parsed, mut here, mut depths) = (Parsed::default(), module.to_vec(), Vec::new());
    let (mut depth, mut i) = (0, 0);
    while i < t.len() {
        let (w, fresh) = (tok(i), i == 0 || tok(i - 1) != "::");
        if w == "{" {
            depth += 1;
        } else if w == "}" && depths.last() == Some(&depth) {
            (depth, _, _) = (depth - 1, depths.pop(), here.pop()); // the end of an inline module
        } else if w == "}" {
            depth -= 1;
        } else if w == "mod" && tok(i + 1).starts_with(word_char) && tok(i + 2) == "{" {
            depths.push(depth + 1);
            here.push(tok(i + 1).to_string());
        } else if fresh && (w == "use" || is_start(w) && tok(i + 1) == "::") {
            let mut leaves = Vec::new();
            let end = match (w, tok(i + 1)) {
                ("use", "::") => i + 2, // `use ::name`: an extern crate
                ("use", _) => parse_tree(&t, i + 1, &[], &mut leaves),
                _ => parse_tree(&t, i, &[], &mut leaves),
            };
            let with_path =
                |(segs, alias, line): Leaf| Some((absolute(&segs, &here)?, segs, alias, line));
            for (path, segs, alias, line) in leaves.into_iter().filter_map(with_path) {
                if w == "use" && depth == 0 && alias != "*" {
                    parsed.imports.insert(alias, path.clone());
                }
                if is_start(&segs[0]) {
                    parsed.refs.push((path, segs.join("::"), line));
                }
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    parsed
}

/// The module of a file under src/: `db/users.rs` is `db::users`, `db/mod.rs` is `db`, and
/// `lib.rs` and `main.rs` are the root.
fn module_of(rel: &str) -> Vec<String> {
    let rel = rel.trim_end_matches(".rs");
    let mut segs: Vec<String> = rel.split('/').map(String::from).collect();
    if segs.last().is_some_and(|s| s == "mod") || segs == ["lib"] || segs == ["main"] {
        segs.pop();
    }
    segs
}

/// Adds the `.rs` files under `dir` to `files` as (path under src/ with `/`, text).
fn read_tree(dir: &Path, rel: &str, files: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read a directory under src/") {
        let path = entry.expect("read a directory entry").path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let rel = format!("{rel}{}", name.expect("a file name"));
        if path.is_dir() {
            read_tree(&path, &format!("{rel}/"), files);
        } else if rel.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).expect("read a source file");
            files.push((rel, text));
        }
    }
}

/// Edges between sibling modules: (parent, from, to) -> first evidence. Top level is `[]`.
type Edges = BTreeMap<(Vec<String>, String, String), String>;

struct Crate {
    /// (path shown in messages, module, parsed), sorted by path.
    files: Vec<(String, Vec<String>, Parsed)>,
    /// Module -> index in `files`; `lib.rs` is the root, `main.rs` is not in it.
    modules: BTreeMap<Vec<String>, usize>,
}

impl Crate {
    fn new(mut sources: Vec<(String, String)>) -> Crate {
        sources.sort();
        let (mut files, mut modules) = (Vec::new(), BTreeMap::new());
        for (rel, text) in sources {
            let (module, bin) = (module_of(&rel), rel == "main.rs");
            if !bin {
                modules.insert(module.clone(), files.len());
            }
            let parsed = parse_file(&text, &module, bin);
            files.push((format!("src/{rel}"), module, parsed));
        }
        Crate { files, modules }
    }

    /// The module that defines `path`: its longest prefix that is a module, followed through
    /// that module's `use` declarations when the next segment is a name it imports.
    fn resolve(&self, path: &[String], hops: usize) -> Vec<String> {
        let known = |n: &usize| self.modules.contains_key(&path[..*n]);
        let n = (0..=path.len()).rfind(known).unwrap_or(0);
        let module = self.modules.get(&path[..n]).map(|&f| &self.files[f].2);
        if let Some(to) = path.get(n).and_then(|item| module?.imports.get(item))
            && hops < 8
        {
            return self.resolve(&[to, &path[n + 1..]].concat(), hops + 1);
        }
        path[..n].to_vec()
    }

    /// A reference from module `a` to module `b` is an edge between the children of their
    /// common ancestor that hold them; none when one contains the other.
    fn edges(&self) -> Edges {
        let mut edges = Edges::new();
        for (file, module, parsed) in self.files.iter().filter(|f| !f.1.is_empty()) {
            for (path, text, line) in &parsed.refs {
                let target = self.resolve(path, 0);
                let common = module.iter().zip(&target).take_while(|(a, b)| a == b);
                let c = common.count();
                if c < module.len() && c < target.len() {
                    let key = (module[..c].to_vec(), module[c].clone(), target[c].clone());
                    let evidence = format!("{file}:{line} uses {text}");
                    edges.entry(key).or_insert(evidence);
                }
            }
        }
        edges
    }
}

/// The kinds of violation, in report order; `check` returns one list of lines per kind.
const KINDS: [&str; 4] = [
    "imports the layer table does not allow",
    "cycles among top-level modules",
    "cycles among sibling modules",
    "modules missing from the layer table",
];
const TABLE: usize = 0;
const CYCLE: usize = 1;
const SIBLINGS: usize = 2;
const MISSING: usize = 3;

/// One line per violation, under a heading per kind; empty when there is none.
fn render(found: &[Vec<String>; 4]) -> String {
    let mut out = String::new();
    for (kind, lines) in KINDS.iter().zip(found).filter(|k| !k.1.is_empty()) {
        out += &format!("{kind} ({}):\n", lines.len());
        lines.iter().for_each(|line| out += &format!("  {line}\n"));
    }
    out
}

/// Every violation in `sources` (path under src/, text), by kind.
fn check(sources: Vec<(String, String)>, table: &[(&str, Allow)]) -> [Vec<String>; 4] {
    let krate = Crate::new(sources);
    let edges = krate.edges();
    let mut found: [Vec<String>; 4] = Default::default();
    for ((_, from, to), evidence) in edges.iter().filter(|e| e.0.0.is_empty()) {
        let (rule, list) = match table.iter().find(|t| t.0 == from) {
            Some((_, AnyExcept(no))) if no.contains(&to.as_str()) => ("anything but", no),
            Some((_, Only(yes))) if !yes.contains(&to.as_str()) => ("only", yes),
            _ => continue,
        };
        let list = list.join(", ");
        let line = format!("{from} -> {to} ({from} may import {rule} [{list}]): {evidence}");
        found[TABLE].push(line);
    }
    for (parent, cycle) in cycles(&edges) {
        let prefix: String = parent.iter().map(|p| format!("{p}::")).collect();
        let names = cycle.iter().chain(&cycle[..1]);
        let path: Vec<String> = names.map(|n| format!("{prefix}{n}")).collect();
        let hops = cycle.iter().zip(cycle.iter().cycle().skip(1));
        let key = |(a, b): (&String, &String)| (parent.clone(), a.clone(), b.clone());
        let evidence: Vec<&str> = hops.map(|hop| edges[&key(hop)].as_str()).collect();
        let kind = if parent.is_empty() { CYCLE } else { SIBLINGS };
        found[kind].push(format!("{}: {}", path.join(" -> "), evidence.join("; ")));
    }
    let tops = krate.modules.keys().filter(|m| m.len() == 1);
    for top in tops.filter(|m| !table.iter().any(|t| t.0 == m[0])) {
        found[MISSING].push(format!("add {} to the layer table", top[0]));
    }
    found
}

/// For each edge, the shortest way back closes a cycle through it: every edge on a cycle is in
/// one of these. Each is (parent, children), starting at the least child.
fn cycles(edges: &Edges) -> BTreeSet<(Vec<String>, Vec<String>)> {
    let mut found = BTreeSet::new();
    for (parent, from, to) in edges.keys() {
        let mut back = BTreeMap::from([(to, from)]);
        let mut queue = VecDeque::from([to]);
        while let Some(node) = queue.pop_front() {
            for (_, _, next) in edges.keys().filter(|k| &k.0 == parent && &k.1 == node) {
                if !back.contains_key(next) {
                    back.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        let mut cycle = vec![from.clone()];
        while let Some(&node) = back.get(&cycle[cycle.len() - 1]).filter(|&&n| n != from) {
            cycle.push(node.clone());
        }
        if back.contains_key(from) {
            cycle.reverse();
            let least = (0..cycle.len()).min_by_key(|&k| &cycle[k]).unwrap_or(0);
            cycle.rotate_left(least);
            found.insert((parent.clone(), cycle));
        }
    }
    found
}

// The checker's own tests, on small in-memory snippets and trees.

/// A tree written as `== path` lines, each followed by that file's text.
fn tree(spec: &str) -> Vec<(String, String)> {
    let split = |f: &str| f.split_once('\n').map(|(p, t)| (p.into(), t.into()));
    spec.split("== ").filter_map(split).collect()
}

/// `path @ line` of each reference in `text`, in the file `rel`, absolute or as written.
fn refs(text: &str, rel: &str, absolute: bool) -> Vec<String> {
    let show = |(path, written, line): (Vec<String>, String, usize)| {
        let shown = if absolute { path.join("::") } else { written };
        format!("{shown} @ {line}")
    };
    let refs = parse_file(text, &module_of(rel), false).refs;
    refs.into_iter().map(show).collect()
}

#[test]
fn grouped_use_trees_span_lines() {
    let text = "use crate::{\n    config::DbConfig,\n    telemetry::{self, metrics::names as n},\n    *,\n};";
    let want = "crate::config::DbConfig @ 2, crate::telemetry @ 3, crate::telemetry::metrics::names @ 3, crate::* @ 4";
    assert_eq!(refs(text, "db/mod.rs", false).join(", "), want);
    let text = "fn f() {\n    counter!(crate::telemetry::names::DB_QUERIES).add(crate::x::Y::<u8>::new());\n}";
    let want = "telemetry::names::DB_QUERIES @ 2, x::Y @ 2";
    assert_eq!(refs(text, "db/mod.rs", true).join(", "), want);
}

#[test]
fn super_resolves_from_the_file_and_its_inline_modules() {
    let abs = |text: &str, rel: &str| refs(text, rel, true).join(", ");
    let text = "use super::replicas::Replica;\nuse super::super::Error;\nmod tests { use super::*; }\nuse super::{super::Db};";
    let want =
        "db::cluster::replicas::Replica @ 1, db::Error @ 2, db::cluster::shard::* @ 3, db::Db @ 4";
    assert_eq!(abs(text, "db/cluster/shard.rs"), want);
    // `db/cluster/mod.rs` is `db::cluster`, so its `super` is `db`; above the crate is nothing.
    assert_eq!(
        abs("use super::Error;", "db/cluster/mod.rs"),
        "db::Error @ 1"
    );
    assert_eq!(abs("use super::super::X;", "db/mod.rs"), "");
}

#[test]
fn comments_and_strings_are_ignored() {
    let text = r##"// crate::a::X
/// crate::b::X and [`super::b`]
//! crate::c::X
/* crate::d::X /* nested */ crate::e::X */
const S: &str = "crate::f::X \" crate::g::X";
const R: &str = r#"crate::h::X " crate::i::X"#;
const C: char = '"'; const Q: char = '\''; fn f<'a>(x: &'a str) {}
use crate::real::Y;"##;
    assert_eq!(refs(text, "db/mod.rs", false), ["crate::real::Y @ 8"]);
}

#[test]
fn items_resolve_through_the_parents_reexports() {
    let files = tree(
        "== lib.rs\npub mod db;\npub use db::Db;
== db/mod.rs\nmod users;\nmod directory;\npub use users::{Page, UserUpdate};
pub(crate) use self::directory::Dir as D;\npub struct Db;
== db/users.rs\npub struct Page;\nuse super::D;
== db/directory.rs\nuse super::{Db, UserUpdate};\nuse crate::db::Page;\n",
    );
    let krate = Crate::new(files.clone());
    let resolve = |p: &str| krate.resolve(&module_of(p), 0).join("::");
    assert_eq!(resolve("db/Page"), "db::users");
    assert_eq!(resolve("db/D"), "db::directory");
    assert_eq!(resolve("db/Db"), "db");
    assert_eq!(resolve("Db"), "db");
    let want = "cycles among sibling modules (1):
  db::directory -> db::users -> db::directory: src/db/directory.rs:1 uses super::UserUpdate; src/db/users.rs:2 uses super::D
";
    assert_eq!(render(&check(files, &[("db", Only(&[]))])), want);
}

#[test]
fn a_cycle_on_disk_is_reported() {
    let nanos = std::time::UNIX_EPOCH.elapsed().expect("a clock after 1970");
    let name = format!("layers-test-{}-{}", std::process::id(), nanos.as_nanos());
    let root = std::env::temp_dir().join(name);
    let files = tree(
        "== lib.rs\npub mod db;\npub mod telemetry;\npub mod extra;\npub struct AppState;
== db/mod.rs\npub struct Db;\nmod pool;\nuse crate::AppState;
== db/pool.rs\nfn f() { metrics::counter!(crate::telemetry::names::Q); }
== telemetry/mod.rs\npub mod names {}\n\nuse crate::{\n    db::Db,\n};
== extra.rs\n",
    );
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the fake tree");
        std::fs::write(path, text).expect("write a fake source file");
    }
    let mut sources = Vec::new();
    read_tree(&root, "", &mut sources);
    std::fs::remove_dir_all(&root).expect("remove the fake tree");
    let want = "imports the layer table does not allow (1):
  telemetry -> db (telemetry may import only [config]): src/telemetry/mod.rs:4 uses crate::db::Db
cycles among top-level modules (1):
  db -> telemetry -> db: src/db/pool.rs:1 uses crate::telemetry::names::Q; src/telemetry/mod.rs:4 uses crate::db::Db
modules missing from the layer table (1):
  add extra to the layer table
";
    assert_eq!(render(&check(sources, LAYERS)), want);
    let clean = tree("== lib.rs\npub mod db;\n== db/mod.rs\nuse crate::telemetry::X;\n");
    assert_eq!(render(&check(clean, LAYERS)), "");
}
