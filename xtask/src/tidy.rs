//! The tidy checks (in the manner of rust-analyzer's): each reads the source tree and fails
//! naming every place that breaks its rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers of the workspace, bottom first. A crate depends only on crates of lower layers,
/// never on one of its own layer: the records platform, compliance and the SIEM feeds know
/// nothing of each other (what one asks of another comes in as a function when the server
/// opens it), and the console and the server sit on top of them all.
const LAYERS: &[&[&str]] = &[
    &["custos-audit", "custos-records"],
    &["custos-cluster"],
    &["custos-http"],
    &["custos-platform", "custos-compliance", "custos-siem"],
    &["custos-console"],
    &["custos-server"],
    &["custos-bench"],
    &["custos"],
];

/// The documents whose file names are checked.
const DOCUMENTS: &[&str] = &["ARCHITECTURE.md", "README.md", "BENCHMARKS.md", "docs"];

/// Extensions of the source files a document may name.
const SOURCE_EXTENSIONS: &[&str] = &["rs", "py", "md", "json", "toml", "css", "js", "sh"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// Every file under `dir` (recursively), but `target`, `node_modules` and hidden folders.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "target" && name != "node_modules" && !name.starts_with('.') {
                out.extend(files(&path));
            }
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The crate folders under `crates/`.
fn crates() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root().join("crates"))
        .expect("crates/ is there")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

/// The Rust files of the crates and of xtask, with their text; unit-test files left out.
fn rust_sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for dir in [root().join("crates"), root().join("xtask")] {
        for path in files(&dir) {
            let in_src = path.components().any(|c| c.as_os_str() == "src");
            if path.extension().is_some_and(|e| e == "rs") && in_src {
                let text = fs::read_to_string(&path).expect("a readable source file");
                out.push((path, text));
            }
        }
    }
    out
}

fn is_test_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs")
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn layer_of(name: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&name))
}

/// The workspace crates a manifest depends on, in any of its dependency tables.
fn workspace_dependencies(manifest: &str, workspace: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line.ends_with("dependencies]");
            continue;
        }
        let Some(name) = line.split(['=', '.', ' ']).next() else {
            continue;
        };
        if in_dependencies && workspace.iter().any(|w| w == name) {
            out.push(name.to_string());
        }
    }
    out
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let workspace = crates();
    let mut wrong = Vec::new();
    for name in &workspace {
        let Some(layer) = layer_of(name) else {
            wrong.push(format!(
                "crates/{name} is in no layer: place it in LAYERS (and in ARCHITECTURE.md)"
            ));
            continue;
        };
        let manifest = fs::read_to_string(root().join("crates").join(name).join("Cargo.toml"))
            .expect("a readable manifest");
        for dependency in workspace_dependencies(&manifest, &workspace) {
            match layer_of(&dependency) {
                Some(below) if below < layer => {}
                _ => wrong.push(format!(
                    "crates/{name} depends on {dependency}, which is not below it"
                )),
            }
        }
    }
    for layer in LAYERS {
        for name in *layer {
            if !workspace.iter().any(|w| w == name) {
                wrong.push(format!("LAYERS names {name}, which is not a crate"));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

/// The top-level modules of `crate_name` that each of its top-level modules names (`crate::x`),
/// unit tests left out.
fn module_imports(crate_name: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("crates").join(crate_name).join("src");
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files(&src) {
        let Ok(relative) = path.strip_prefix(&src) else {
            continue;
        };
        let Some(first) = relative.components().next() else {
            continue;
        };
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if path.extension().is_none_or(|e| e != "rs")
            || is_test_file(&path)
            || module == "lib"
            || module == "main"
        {
            continue;
        }
        let text = fs::read_to_string(&path).expect("a readable source file");
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
        let named = imports.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::B, c}`: the first segment of each item at the group's depth.
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && (c.is_ascii_alphanumeric() || c == '_') => {
                            item_start = false;
                            let name: String = group[i..]
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                .collect();
                            named.insert(name);
                        }
                        _ => {}
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                named.insert(name);
            }
        }
        named.remove(&module);
    }
    let modules: BTreeSet<String> = imports.keys().cloned().collect();
    for named in imports.values_mut() {
        named.retain(|name| modules.contains(name));
    }
    imports
}

/// A circle of imports among `imports`' modules, as the path around it, if there is one.
fn circle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut around = path[at..].to_vec();
            around.push(module.to_string());
            return Some(around);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(found) = visit(next, imports, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    imports
        .keys()
        .find_map(|module| visit(module, imports, &mut Vec::new(), &mut done))
}

/// The modules of a crate form layers, as the crates do: a module never reaches, directly or
/// through others, into one that uses it.
#[test]
fn the_modules_of_a_crate_import_one_another_in_no_circle() {
    let wrong: Vec<String> = crates()
        .into_iter()
        .filter_map(|name| {
            circle(&module_imports(&name)).map(|around| {
                format!(
                    "crates/{name}: its modules import one another in a circle: {}",
                    around.join(" -> ")
                )
            })
        })
        .collect();
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

#[test]
fn every_file_says_what_it_is() {
    let wrong: Vec<String> = rust_sources()
        .into_iter()
        .filter(|(path, _)| !is_test_file(path))
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(path, _)| format!("{} does not start with a `//!` comment", shown(&path)))
        .collect();
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

/// Whether `line` declares a public item or field that needs a doc comment.
fn public_item(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix("pub ") else {
        return false;
    };
    // A macro's template is documented where the macro is called.
    if rest.contains('$') {
        return false;
    }
    let rest = rest
        .trim_start_matches("async ")
        .trim_start_matches("const fn ")
        .trim_start_matches("unsafe ");
    let keyword = rest.split_whitespace().next().unwrap_or_default();
    match keyword {
        "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" => true,
        // `use` re-exports and `mod` (a module says what it is in its own file) need none.
        "use" | "mod" | "(crate)" => false,
        // A field: `pub name: Type`.
        field => field.ends_with(':'),
    }
}

#[test]
fn every_public_item_has_a_doc_line() {
    let mut wrong = Vec::new();
    for (path, text) in rust_sources() {
        if is_test_file(&path) {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            if !public_item(line) {
                continue;
            }
            let documented = lines[..at]
                .iter()
                .rev()
                .map(|l| l.trim())
                .find(|l| !l.starts_with("#[") && !l.ends_with(")]") && !l.is_empty())
                .is_some_and(|l| l.starts_with("///"));
            if !documented {
                wrong.push(format!(
                    "{}:{}: `{}` has no doc comment",
                    shown(&path),
                    at + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

/// The backticked words of a Markdown text.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Whether the source file a document names exists: a path from the root, from a crate's
/// folder or its `src`; a bare name anywhere in the workspace.
fn exists(name: &str, all: &BTreeSet<PathBuf>) -> bool {
    let root = root();
    if name.contains('/') {
        let mut bases = vec![root.clone()];
        for krate in crates() {
            bases.push(root.join("crates").join(&krate));
            bases.push(root.join("crates").join(&krate).join("src"));
        }
        bases.push(root.join("crates"));
        bases.iter().any(|base| base.join(name).exists())
    } else {
        all.iter()
            .any(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name))
    }
}

#[test]
fn documents_name_only_files_that_exist() {
    let root = root();
    let all: BTreeSet<PathBuf> = files(&root).into_iter().collect();
    let mut documents = Vec::new();
    for name in DOCUMENTS {
        let path = root.join(name);
        if path.is_dir() {
            documents.extend(
                files(&path)
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "md")),
            );
        } else {
            documents.push(path);
        }
    }
    let mut wrong = Vec::new();
    for document in documents {
        let text = fs::read_to_string(&document).expect("a readable document");
        for word in backticked(&text) {
            // A word that starts with `/` is a route, not a file; one that starts with `../` is
            // outside the repository (the shared documents beside it), not ours to check.
            let looks_like_file = !word.contains(' ')
                && !word.starts_with('/')
                && !word.starts_with("../")
                && !word.contains('<')
                && !word.contains('*')
                && word.rsplit_once('.').is_some_and(|(stem, ext)| {
                    !stem.is_empty() && SOURCE_EXTENSIONS.contains(&ext)
                });
            let crate_folder = word.starts_with("crates/");
            if (looks_like_file || crate_folder) && !exists(&word, &all) {
                wrong.push(format!(
                    "{} names `{word}`, which does not exist",
                    shown(&document)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

#[test]
fn the_code_map_names_every_crate_and_no_other() {
    let text = fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let map = text
        .split("\n## ")
        .find(|section| section.starts_with("Code map"))
        .expect("ARCHITECTURE.md has a \"Code map\" section");
    let named: BTreeSet<String> = backticked(map)
        .into_iter()
        .filter(|w| w == "custos" || (w.starts_with("custos-") && !w.contains(['/', ' '])))
        .collect();
    let workspace: BTreeSet<String> = crates().into_iter().collect();
    let missing: Vec<_> = workspace.difference(&named).collect();
    let stale: Vec<_> = named.difference(&workspace).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the code map lacks {missing:?} and names {stale:?}, which are not crates"
    );
}

/// Files that open files by other ways than `custos_audit::files`, and why that is right.
const OPENS_OF_THEIR_OWN: &[(&str, &str)] = &[
    (
        "crates/custos-audit/src/files.rs",
        "the one guarded way itself",
    ),
    (
        "crates/custos-records/src/sqlite.rs",
        "below custos-audit: SQLite opens its files with SQLITE_OPEN_NOFOLLOW (`open_own`); this only fsyncs a file SQLite has just made",
    ),
    (
        "crates/custos-siem/src/streams.rs",
        "reads the host name from /proc",
    ),
    (
        "crates/custos-bench/src/lib.rs",
        "reads its own resident memory from /proc",
    ),
    (
        "crates/custos-bench/src/query.rs",
        "reads the report its child process wrote into the bench's folder",
    ),
    (
        "crates/custos/src/main.rs",
        "files a user names on the command line (--json, --checkpoint)",
    ),
    (
        "crates/custos/src/audit_remote.rs",
        "files a user names on the command line (--out, --keep)",
    ),
    (
        "crates/custos/src/admin.rs",
        "files a user names on the command line",
    ),
];

#[test]
fn files_of_the_data_directory_are_opened_only_through_the_one_guarded_way() {
    // `custos-audit/src/files.rs` opens a file of the data directory never through a symbolic
    // link and only if it is a regular file; a call around it would bring the hole back.
    const AROUND: &[&str] = &[
        "File::open(",
        "File::create(",
        "OpenOptions::new(",
        "fs::read(",
        "fs::read_to_string(",
        "fs::write(",
    ];
    let crates = root().join("crates");
    let allowed = |path: &Path| {
        OPENS_OF_THEIR_OWN
            .iter()
            .any(|(file, _)| path.ends_with(file))
    };
    let wrong: Vec<String> = rust_sources()
        .into_iter()
        .filter(|(path, _)| path.starts_with(&crates) && !is_test_file(path) && !allowed(path))
        .flat_map(|(path, text)| {
            // A test module at the end of a file may make and read what it likes.
            let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
            AROUND
                .iter()
                .filter(|call| {
                    code.match_indices(*call).any(|(at, _)| {
                        // `IdFile::open(` is the crate's own, not `File::open(`.
                        !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    })
                })
                .map(|call| format!("{} calls {call}; use custos_audit::files", shown(&path)))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
    let stale: Vec<&str> = OPENS_OF_THEIR_OWN
        .iter()
        .map(|(file, _)| *file)
        .filter(|file| !root().join(file).exists())
        .collect();
    assert!(
        stale.is_empty(),
        "OPENS_OF_THEIR_OWN names {stale:?}, which are gone"
    );
}
