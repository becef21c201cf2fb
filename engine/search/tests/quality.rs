//! Search quality on a corpus nobody here wrote: this machine's manual pages (section 1,
//! rendered by groff), imported as notes, and questions a person might ask, each with the
//! pages that answer it. Reports MRR@10 and recall@10 for words alone, meaning alone, plain
//! reciprocal rank fusion, weighted rank fusion and a weighted sum of scores (each with the
//! parameters the tuning half of the questions picks) and the default hybrid, on the tuning
//! half (even-numbered questions), the held-out half (odd) and all; the default must beat both
//! sides alone. Then searches for a word only one page has, which words answer and meaning
//! does not: the default must stay near words alone there. Figures: `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use adiuva_engine::{Effect, EventDraft, KeyProtection, Workspace};
use adiuva_model::{Actor, Collection, EventKind, RecordId};
use adiuva_search::{Embedder, Filter, Mode, SearchIndex, SearchQuery, fusion};
use serde_json::json;
use zeroize::Zeroizing;

/// The part of each page imported: its name, synopsis and the start of its description.
const PAGE_CHARS: usize = 2400;

/// Questions and the commands whose pages answer them. None names its command.
const QUERIES: &[(&str, &[&str])] = &[
    ("show the files in a folder", &["ls"]),
    ("duplicate a file to another place", &["cp"]),
    ("rename a file", &["mv"]),
    ("delete files", &["rm"]),
    ("make a new folder", &["mkdir"]),
    ("allow others to execute my script", &["chmod"]),
    ("give a file to another user", &["chown", "chgrp"]),
    ("print the first few lines of a file", &["head"]),
    ("watch the end of a log file as it grows", &["tail"]),
    ("put lines in alphabetical order", &["sort"]),
    ("drop repeated adjacent lines", &["uniq"]),
    ("count the words and lines in a text", &["wc"]),
    ("take out one column of each line", &["cut"]),
    ("replace or delete characters", &["tr"]),
    ("how much space does this directory use", &["du"]),
    ("how much free space is left on the disks", &["df"]),
    ("make a shortcut pointing to another file", &["ln"]),
    ("update the modification time of a file", &["touch"]),
    ("what day and time is it", &["date"]),
    ("pause for a number of seconds", &["sleep"]),
    ("send output to the screen and a file at once", &["tee"]),
    ("cut a big file into smaller pieces", &["split"]),
    ("verify a download with a SHA-256 checksum", &["sha256sum"]),
    ("encode binary data as printable text", &["base64", "basenc"]),
    ("print numbers from one to ten", &["seq"]),
    ("run a program with lower scheduling priority", &["nice"]),
    ("stop a command that runs too long", &["timeout"]),
    ("send a signal to a process", &["kill", "pkill"]),
    ("list the running processes", &["ps", "top"]),
    ("look for lines matching a pattern", &["grep"]),
    ("substitute text in a stream", &["sed"]),
    ("compress a file", &["gzip", "bzip2", "xz", "zip"]),
    ("pack many files into one archive", &["tar", "zip"]),
    ("search for files by name in a directory tree", &["find"]),
    ("build command lines from standard input", &["xargs"]),
    ("show the differences between two files", &["diff", "cmp"]),
    ("where am I in the filesystem", &["pwd"]),
    ("how much memory is used", &["free"]),
    ("how long has the machine been running", &["uptime"]),
    ("the name of this computer", &["hostname"]),
    ("change my login password", &["passwd"]),
    ("become another user", &["su"]),
    ("read the documentation of a command", &["man"]),
    ("download a web page from a URL", &["curl", "wget"]),
    ("log into a remote machine securely", &["ssh"]),
    ("copy files to another host over the network", &["scp"]),
    ("page through a long text one screen at a time", &["less", "more"]),
    ("run a command repeatedly and show its output", &["watch"]),
    ("extract files from a zip archive", &["unzip"]),
    ("what kind of data is in this file", &["file"]),
    ("show a file's size, inode and timestamps", &["stat"]),
    ("which user am I", &["whoami", "id"]),
    ("the kernel version and machine architecture", &["uname"]),
    ("dump a binary file in hexadecimal", &["hexdump", "od", "xxd"]),
    ("print the readable text inside a binary", &["strings"]),
    ("print lines in reverse order", &["tac"]),
    ("number the lines of a file", &["nl"]),
    ("merge lines of files side by side", &["paste"]),
    ("shuffle lines randomly", &["shuf"]),
    ("strip the directory from a path", &["basename"]),
    ("follow a symbolic link to its target", &["readlink", "realpath"]),
    ("shrink or extend a file to a given size", &["truncate"]),
    ("copy raw blocks from a device", &["dd"]),
    ("locate the executable of a command", &["which", "whereis"]),
    ("encrypt and sign files with a key pair", &["gpg"]),
    ("keep a command running after logging out", &["nohup"]),
    ("query JSON data on the command line", &["jq"]),
    ("apply a diff to source files", &["patch"]),
    ("create a temporary file safely", &["mktemp"]),
    ("split a terminal into several sessions", &["tmux"]),
    ("wrap long lines to fit a given width", &["fold", "fmt"]),
    ("convert tabs into spaces", &["expand"]),
    ("lines that two sorted files have in common", &["comm"]),
    ("combine two files on a shared field", &["join"]),
    ("print all environment variables", &["env", "printenv"]),
    ("break a number into its prime factors", &["factor"]),
    ("how many processors are available", &["nproc", "lscpu"]),
    ("overwrite a file's contents to make recovery hard", &["shred"]),
    ("remove an empty directory", &["rmdir"]),
    ("the parent directory part of a path", &["dirname"]),
    ("print a string over and over until killed", &["yes"]),
    ("evaluate an arithmetic expression", &["expr", "bc"]),
    ("a calculator with arbitrary precision", &["bc"]),
    ("format text into aligned columns", &["column"]),
    ("reverse the characters of each line", &["rev"]),
    ("measure how long a command takes to run", &["time"]),
    ("convert text from one character encoding to another", &["iconv"]),
    ("show the language and regional settings", &["locale"]),
    ("details about the processor such as cores and caches", &["lscpu"]),
    ("run a command while holding a lock on a file", &["flock"]),
    ("which processes are using a file", &["fuser"]),
    ("terminate all processes with a given name", &["killall", "pkill"]),
    ("find process IDs by name", &["pgrep"]),
    ("change the priority of a running process", &["renice"]),
    ("set the disk I/O scheduling class of a process", &["ionice"]),
    ("look up entries in the user or host databases", &["getent"]),
    ("convert numbers to human readable sizes like 1K and 2M", &["numfmt"]),
    ("cut a file into sections at lines that match a pattern", &["csplit"]),
    ("change the buffering of a command's output streams", &["stdbuf"]),
    ("order items by dependencies given as pairs", &["tsort"]),
    ("paginate text for printing with page headers", &["pr"]),
    ("who is logged in right now", &["users", "who", "w"]),
    ("which groups does a user belong to", &["groups", "id"]),
    ("compute a checksum to detect changes in a file", &["cksum", "md5sum", "sum", "b2sum", "sha1sum", "sha256sum"]),
    ("set terminal line settings", &["stty"]),
    ("create a named pipe", &["mkfifo"]),
    ("find words starting with a given prefix in a sorted list", &["look"]),
    ("the name of the terminal connected to standard input", &["tty"]),
    ("format numbers and strings with a template", &["printf"]),
    ("check whether a file exists in a shell script", &["test"]),
];

/// Pages imported beside the answers, so the answers have company.
const OTHERS: &[&str] = &[
    "cat",
    "md5sum",
    "env",
    "sha1sum",
    "expand",
    "fold",
    "fmt",
    "comm",
    "join",
    "dirname",
    "sync",
    "apropos",
    "openssl",
    "python3",
    "make",
    "perl",
    "awk",
    "vim",
    "install",
    "sqlite3",
    "printenv",
    "yes",
    "tty",
    "stty",
    "users",
    "groups",
    "nproc",
    "arch",
    "factor",
    "expr",
    "test",
    "true",
    "false",
    "printf",
    "echo",
    "dircolors",
    "pathchk",
    "mkfifo",
    "mknod",
    "chroot",
    "runcon",
    "stdbuf",
    "tsort",
    "ptx",
    "pr",
    "numfmt",
    "csplit",
    "b2sum",
    "cksum",
    "sum",
    "unexpand",
    "vdir",
    "dir",
    "shred",
    "link",
    "unlink",
    "rmdir",
    "logname",
    "hostid",
    "uptime",
];

fn page_text(name: &str) -> Option<String> {
    let dir = Path::new("/usr/share/man/man1");
    let path = ["1.gz", "1"].iter().map(|ext| dir.join(format!("{name}.{ext}"))).find(|p| p.is_file())?;
    let zcat = Command::new("zcat").arg("-f").arg(&path).stdout(Stdio::piped()).spawn().ok()?;
    let output = Command::new("groff")
        .args(["-t", "-man", "-Tutf8", "-P", "-cbou"])
        .stdin(zcat.stdout?)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Words the renderer hyphenated at a line end are joined again.
    let text = text.replace("‐\n", "").split_whitespace().collect::<Vec<_>>().join(" ");
    let end = text.char_indices().nth(PAGE_CHARS).map_or(text.len(), |(at, _)| at);
    (!text.is_empty()).then(|| text[..end].to_owned())
}

/// A ranking of the records for a question, best first.
type Ranking = dyn Fn(&Question) -> Vec<RecordId>;

/// How deep the default hybrid reads each side for ten results (see `SearchIndex::search`).
const DEPTH: usize = 30;

/// The records that answer a question, and what each ranking found for it.
struct Question {
    relevant: Vec<RecordId>,
    /// Each side's records, best first, with their scores, [`DEPTH`] deep.
    words: Vec<(RecordId, f32)>,
    meaning: Vec<(RecordId, f32)>,
    /// The default hybrid's ten, through the index.
    hybrid: Vec<RecordId>,
}

#[derive(Clone, Copy)]
struct Scores {
    mrr: f64,
    recall: f64,
}

/// MRR@10 and recall@10 of `rank` over `questions`.
fn scores<'a>(questions: impl Iterator<Item = &'a Question>, rank: &dyn Fn(&Question) -> Vec<RecordId>) -> Scores {
    let (mut mrr, mut recall, mut n) = (0.0, 0.0, 0);
    for question in questions {
        let mut found = rank(question);
        found.truncate(10);
        if let Some(at) = found.iter().position(|id| question.relevant.contains(id)) {
            mrr += 1.0 / (at as f64 + 1.0);
        }
        let relevant = &question.relevant;
        recall += relevant.iter().filter(|id| found.contains(id)).count() as f64 / relevant.len() as f64;
        n += 1;
    }
    Scores { mrr: mrr / f64::from(n), recall: recall / f64::from(n) }
}

/// Scores on the tuning half (even-numbered questions), the held-out half (odd) and all.
fn halves(questions: &[Question], rank: &dyn Fn(&Question) -> Vec<RecordId>) -> [Scores; 3] {
    [
        scores(questions.iter().step_by(2), rank),
        scores(questions.iter().skip(1).step_by(2), rank),
        scores(questions.iter(), rank),
    ]
}

fn ids(ranked: &[(RecordId, f32)]) -> Vec<RecordId> {
    ranked.iter().map(|(id, _)| *id).collect()
}

fn search(
    index: &mut SearchIndex,
    workspace: &mut Workspace,
    text: &str,
    mode: Mode,
    limit: usize,
) -> Vec<(RecordId, f32)> {
    let query = SearchQuery { text: text.into(), mode, filter: Filter::default(), limit };
    index.search(workspace, &query).unwrap().iter().map(|h| (h.id, h.score)).collect()
}

/// For each page that has one, the first word of seven letters or more that no other page
/// has and that is not the page's name, as a search for that page.
fn exact_words<'a>(pages: &[(&'a str, String)]) -> Vec<(String, &'a str)> {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphabetic()).filter(|w| w.chars().count() >= 7).map(str::to_lowercase).collect()
    };
    let mut pages_of: HashMap<String, usize> = HashMap::new();
    for (_, text) in pages {
        for word in words(text).into_iter().collect::<std::collections::HashSet<_>>() {
            *pages_of.entry(word).or_default() += 1;
        }
    }
    pages
        .iter()
        .filter_map(|(name, text)| {
            words(text).into_iter().find(|w| pages_of[w] == 1 && !w.contains(name)).map(|w| (w, *name))
        })
        .collect()
}

fn row(name: &str, [tuning, held_out, all]: [Scores; 3]) {
    println!(
        "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        tuning.mrr, tuning.recall, held_out.mrr, held_out.recall, all.mrr, all.recall
    );
}

// It embeds ~520 chunks: minutes in a debug build. Run it by hand:
// `cargo test --workspace --test quality -- --ignored --nocapture`.
#[test]
#[ignore = "slow: embeds ~520 chunks (minutes in a debug build)"]
fn hybrid_search_beats_words_and_meaning_alone_on_the_manual_pages() {
    let mut names: Vec<&str> = QUERIES.iter().flat_map(|(_, answers)| answers.iter().copied()).collect();
    names.extend(OTHERS);
    names.sort_unstable();
    names.dedup();
    let pages: Vec<(&str, String)> = names.iter().filter_map(|n| page_text(n).map(|t| (*n, t))).collect();
    assert!(pages.len() >= 100, "only {} manual pages found", pages.len());

    let dir = tempfile::tempdir().unwrap();
    let mut workspace =
        Workspace::init(dir.path(), KeyProtection::Passphrase(Zeroizing::new("quality passphrase".into())), "q")
            .unwrap();
    let mut ids_of: HashMap<&str, RecordId> = HashMap::new();
    let events = pages
        .iter()
        .map(|(name, text)| {
            let id = RecordId::new();
            ids_of.insert(*name, id);
            let fields =
                json!({"id": id, "title": name, "body": text, "tags": ["man"], "created_at": chrono::Utc::now()});
            let Some(fields) = fields.as_object().cloned() else { unreachable!() };
            (
                EventDraft::new(EventKind::from_static("note.created"), Actor::User),
                Effect::CreateRecord { collection: Collection::Notes, id, fields },
            )
        })
        .collect();
    workspace.commit_batch(events).unwrap();
    let embedder = Arc::new(Embedder::locate().expect("the embedding model (scripts/test installs it)"));
    let started = std::time::Instant::now();
    let (mut index, built) = SearchIndex::build(&mut workspace, Ok(embedder), &mut |_, _| {}).unwrap();
    println!("{} pages, {} chunks embedded in {:.1} s", pages.len(), built.embedded, started.elapsed().as_secs_f64());

    let questions: Vec<Question> = QUERIES
        .iter()
        .map(|(text, answers)| (*text, answers.iter().filter_map(|a| ids_of.get(a).copied()).collect::<Vec<_>>()))
        .filter(|(_, relevant)| !relevant.is_empty())
        .map(|(text, relevant)| Question {
            relevant,
            words: search(&mut index, &mut workspace, text, Mode::Text, DEPTH),
            meaning: search(&mut index, &mut workspace, text, Mode::Vector, DEPTH),
            hybrid: ids(&search(&mut index, &mut workspace, text, Mode::Hybrid, 10)),
        })
        .collect();
    assert!(questions.len() >= 100, "only {} questions have an answer among the pages", questions.len());
    println!(
        "{} questions over {} pages; tuning half: even-numbered questions, held out: odd",
        questions.len(),
        pages.len()
    );
    println!("| ranking | tuning MRR@10 | recall@10 | held-out MRR@10 | recall@10 | all MRR@10 | recall@10 |");
    println!("|---|---|---|---|---|---|---|");
    let text = halves(&questions, &|q| ids(&q.words));
    let vector = halves(&questions, &|q| ids(&q.meaning));
    row("text (BM25)", text);
    row("vector (all-MiniLM-L6-v2)", vector);
    let rrf = |k: f32, w: f32| {
        move |q: &Question| ids(&fusion::reciprocal_rank(&[(&ids(&q.words), w), (&ids(&q.meaning), 1.0 - w)], k))
    };
    row("reciprocal rank fusion, k = 60, equal weights", halves(&questions, &rrf(fusion::RRF_K, 0.5)));
    // Each fusion's parameters as the tuning half alone would choose them.
    let tuned = |candidates: Vec<(String, Box<Ranking>)>| {
        let scored = candidates.into_iter().map(|(name, rank)| (name, halves(&questions, &rank)));
        scored.reduce(|best, next| if next.1[0].mrr > best.1[0].mrr { next } else { best }).unwrap()
    };
    let weights = || (0..=10).map(|n| n as f32 * 0.05);
    let (name, figures) = tuned(
        [1.0, 5.0, 10.0, 20.0, 30.0, 60.0]
            .into_iter()
            .flat_map(|k| weights().map(move |w| (k, w)))
            .map(|(k, w)| {
                (format!("weighted reciprocal rank fusion, k = {k}, text weight {w:.2}"), Box::new(rrf(k, w)) as Box<_>)
            })
            .collect(),
    );
    row(&format!("{name} (tuned)"), figures);
    let (name, figures) = tuned(
        weights()
            .map(|w| {
                let rank = move |q: &Question| ids(&fusion::weighted(&q.words, &q.meaning, w));
                (format!("weighted sum of min-max scaled scores, text weight {w:.2}"), Box::new(rank) as Box<_>)
            })
            .collect(),
    );
    row(&format!("{name} (tuned)"), figures);
    let hybrid = halves(&questions, &|q| q.hybrid.clone());
    row(
        &format!(
            "the default hybrid: weighted reciprocal rank fusion, k = {}, text weight {:.2} (0.5 for words fewer than {DEPTH} records have)",
            fusion::HYBRID_K,
            fusion::HYBRID_TEXT_WEIGHT
        ),
        hybrid,
    );
    for (half, name) in [(0, "tuning"), (1, "held-out"), (2, "all")] {
        println!(
            "{name}: hybrid MRR@10 {:.3} vs text {:.3}, vector {:.3}",
            hybrid[half].mrr, text[half].mrr, vector[half].mrr
        );
    }

    // Another kind of search, not used to choose anything: one exact word only one page has.
    let exact: Vec<Question> = exact_words(&pages)
        .into_iter()
        .map(|(word, name)| Question {
            relevant: vec![ids_of[name]],
            words: search(&mut index, &mut workspace, &word, Mode::Text, DEPTH),
            meaning: search(&mut index, &mut workspace, &word, Mode::Vector, DEPTH),
            hybrid: ids(&search(&mut index, &mut workspace, &word, Mode::Hybrid, 10)),
        })
        .collect();
    println!("{} searches for a word only one page has: MRR@10, recall@10", exact.len());
    let rankings: [(&str, &Ranking); 4] = [
        ("text", &|q| ids(&q.words)),
        ("vector", &|q| ids(&q.meaning)),
        ("reciprocal rank fusion, k = 60, equal weights", &rrf(fusion::RRF_K, 0.5)),
        ("the default hybrid", &|q| q.hybrid.clone()),
    ];
    for (name, rank) in rankings {
        let Scores { mrr, recall } = scores(exact.iter(), rank);
        println!("| {name} | {mrr:.3} | {recall:.3} |");
    }
    let [_, _, all] = hybrid;
    assert!(all.mrr > text[2].mrr && all.mrr > vector[2].mrr, "hybrid MRR@10 {:.3} does not beat both", all.mrr);
    assert!(all.recall >= text[2].recall && all.recall >= vector[2].recall, "hybrid recall@10 {:.3}", all.recall);
    let exact_hybrid = scores(exact.iter(), &|q| q.hybrid.clone());
    let exact_text = scores(exact.iter(), &|q| ids(&q.words));
    assert!(exact_hybrid.mrr > exact_text.mrr * 0.95, "a rare word: hybrid MRR@10 {:.3}", exact_hybrid.mrr);
}
