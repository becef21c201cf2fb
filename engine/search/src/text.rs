//! The full-text side: a tantivy index of chunks (one tantivy document per chunk, carrying its
//! record's id, collection, tags, source and time for filters), held in memory. It stores no
//! text but the chunk's key: the read views hold every record's text already, and a snippet is
//! cut from there ([`Marker`]).
//!
//! Words are cut by [`ScriptTokenizer`]: runs of letters and digits in scripts that separate
//! words (Latin, Cyrillic, Greek, …) are words, lowercased, accents folded, the commonest
//! English function words dropped ([`STOP_WORDS`]), English-stemmed;
//! Chinese, Japanese and Korean text, which does not separate words, is indexed as overlapping
//! character pairs (bigrams), so any word of two or more characters is found.

use std::collections::HashSet;
use std::ops::Bound;

use adiuva_model::{Collection, RecordId};
use chrono::{DateTime, Utc};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, StopWordFilter, TextAnalyzer, Token,
    TokenStream, Tokenizer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::{Result, SearchError};
use crate::record::Searchable;

const TOKENIZER: &str = "adiuva";
/// Memory for tantivy's indexing buffer (its minimum is 15 MB per thread).
const WRITER_MEMORY: usize = 32_000_000;
/// A title word counts this many times a body word. Not more: a title is a field of a few words,
/// so BM25 already scores a word found there far above the same word in a body, and a common
/// word that happens to be a record's title (a page called "file") outranked every body.
const TITLE_BOOST: f32 = 1.0;
/// Characters of context a snippet shows.
const SNIPPET_CHARS: usize = 180;

/// English words too common to tell records apart (Lucene's English list): in a question such
/// as "what is the size of a file" they would match nearly every record.
pub const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with",
];

/// Which records a search may return (every condition must hold).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub collection: Option<Collection>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    pub source: Option<String>,
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

impl Filter {
    /// Whether this lets every record through.
    pub fn is_empty(&self) -> bool {
        self.collection.is_none()
            && self.tags.is_empty()
            && self.source.is_none()
            && self.after.is_none()
            && self.before.is_none()
    }

    /// Whether a record's metadata passes (for results found without tantivy).
    pub fn admits(
        &self,
        collection: Collection,
        tags: &[String],
        source: Option<&str>,
        time: Option<DateTime<Utc>>,
    ) -> bool {
        self.collection.is_none_or(|c| c == collection)
            && self.tags.iter().all(|t| tags.contains(t))
            && self.source.as_deref().is_none_or(|s| source == Some(s))
            && self.after.is_none_or(|after| time.is_some_and(|t| t >= after))
            && self.before.is_none_or(|before| time.is_some_and(|t| t < before))
    }
}

/// A record found by its words: its best chunk and that chunk's score.
#[derive(Clone, Copy, Debug)]
pub struct TextHit {
    pub record: RecordId,
    pub chunk: usize,
    pub score: f32,
}

/// What a search found by words: the records, best first, and what marks the query's words
/// in their text.
pub struct TextFound {
    pub hits: Vec<TextHit>,
    pub marker: Marker,
}

/// Marks a query's words in a passage (the words as the index holds them, so a stemmed or
/// folded form is found too).
pub struct Marker {
    body: SnippetGenerator,
    title: SnippetGenerator,
}

impl Marker {
    /// The passage of `body` (a chunk) around the query's words, marked `**like this**`; else
    /// `title` marked, if it holds them; else the opening of `body`.
    pub fn snippet(&self, title: &str, body: &str) -> String {
        let snippet = self.body.snippet(body);
        if !snippet.highlighted().is_empty() {
            return marked(&snippet);
        }
        let snippet = self.title.snippet(title);
        if snippet.highlighted().is_empty() { opening(body) } else { marked(&snippet) }
    }
}

#[derive(Clone, Copy)]
struct Fields {
    /// `RECORD/N`: chunk `N` of a record, its only unique term (a second one naming the record
    /// alone cost 2.5 MB of terms per 100k records, and as much again stored).
    key: Field,
    collection: Field,
    tags: Field,
    source: Field,
    time: Field,
    title: Field,
    body: Field,
}

/// The in-memory full-text index.
pub struct TextIndex {
    index: Index,
    /// Open only while an update is staged: an open writer keeps a queue for 10,000 documents
    /// (2.4 MB) and its threads, which an idle index does not need.
    writer: Option<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
}

/// The text analysis used for indexing and queries alike.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(ScriptTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::remove(STOP_WORDS.iter().map(|w| (*w).to_owned())))
        .filter(Stemmer::new(Language::English))
        .build()
}

impl TextIndex {
    pub fn new() -> Result<Self> {
        let mut schema = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                // Frequencies for BM25; no positions: no query here reads them (no phrases), and
                // snippets find the words in the text itself.
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let fields = Fields {
            key: schema.add_text_field("key", STRING | STORED),
            collection: schema.add_text_field("collection", STRING),
            tags: schema.add_text_field("tags", STRING),
            source: schema.add_text_field("source", STRING),
            time: schema.add_i64_field("time", INDEXED | FAST),
            title: schema.add_text_field("title", text.clone()),
            body: schema.add_text_field("body", text),
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register(TOKENIZER, analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, writer: None, reader, fields, analyzer: analyzer() })
    }

    /// The writer, opened for the update being staged.
    fn writer(&mut self) -> Result<&mut IndexWriter> {
        if self.writer.is_none() {
            self.writer = Some(self.index.writer_with_num_threads(1, WRITER_MEMORY)?);
        }
        self.writer.as_mut().ok_or_else(|| SearchError::IndexFailed { detail: "no index writer".into() })
    }

    /// The record and chunk `key` names.
    fn chunk_of(key: &str) -> Option<(RecordId, usize)> {
        let (record, chunk) = key.split_once('/')?;
        Some((record.parse().ok()?, chunk.parse().ok()?))
    }

    /// The key of chunk `n` of a record (unique in the index).
    fn key(record: RecordId, n: usize) -> String {
        format!("{record}/{n}")
    }

    /// Stages a record's chunks (seen after [`commit`](Self::commit)).
    pub fn add(&mut self, record: &Searchable) -> Result<()> {
        let f = self.fields;
        for (n, chunk) in record.chunks.iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.key, Self::key(record.id, n));
            doc.add_text(f.collection, record.collection.name());
            for tag in &record.tags {
                doc.add_text(f.tags, tag);
            }
            if let Some(source) = &record.source {
                doc.add_text(f.source, source);
            }
            if let Some(time) = record.time {
                doc.add_i64(f.time, time.timestamp());
            }
            doc.add_text(f.title, &record.title);
            doc.add_text(f.body, chunk);
            self.writer()?.add_document(doc)?;
        }
        Ok(())
    }

    /// Stages the removal of the `chunks` chunks of `record`.
    pub fn remove(&mut self, record: RecordId, chunks: usize) -> Result<()> {
        let key = self.fields.key;
        let writer = self.writer()?;
        for n in 0..chunks {
            writer.delete_term(Term::from_field_text(key, &Self::key(record, n)));
        }
        Ok(())
    }

    /// Makes what was staged searchable, and closes the writer once the merges its commit
    /// started are done.
    pub fn commit(&mut self) -> Result<()> {
        if let Some(mut writer) = self.writer.take() {
            writer.commit()?;
            writer.wait_merging_threads()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    fn filter_clauses(&self, filter: &Filter) -> Vec<(Occur, Box<dyn Query>)> {
        let f = self.fields;
        let term = |field: Field, text: &str| -> (Occur, Box<dyn Query>) {
            (Occur::Must, Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::Basic)))
        };
        let mut clauses = Vec::new();
        if let Some(collection) = filter.collection {
            clauses.push(term(f.collection, collection.name()));
        }
        for tag in &filter.tags {
            clauses.push(term(f.tags, tag));
        }
        if let Some(source) = &filter.source {
            clauses.push(term(f.source, source));
        }
        if filter.after.is_some() || filter.before.is_some() {
            let bound = |t: Option<DateTime<Utc>>, inclusive: bool| match t {
                None => Bound::Unbounded,
                Some(t) if inclusive => Bound::Included(Term::from_field_i64(f.time, t.timestamp())),
                Some(t) => Bound::Excluded(Term::from_field_i64(f.time, t.timestamp())),
            };
            clauses
                .push((Occur::Must, Box::new(RangeQuery::new(bound(filter.after, true), bound(filter.before, false)))));
        }
        clauses
    }

    /// The query's words as the index holds them.
    fn terms(&mut self, text: &str) -> Vec<String> {
        let mut stream = self.analyzer.token_stream(text);
        let mut terms = Vec::new();
        while stream.advance() {
            let term = stream.token().text.clone();
            if !terms.contains(&term) {
                terms.push(term);
            }
        }
        terms
    }

    /// The best `limit` records for `text` (any of its words, BM25, title words boosted),
    /// each with its best chunk.
    pub fn search(&mut self, text: &str, filter: &Filter, limit: usize) -> Result<TextFound> {
        let f = self.fields;
        let terms = self.terms(text);
        let mut words: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in &terms {
            for (field, boost) in [(f.title, TITLE_BOOST), (f.body, 1.0)] {
                let query = TermQuery::new(Term::from_field_text(field, term), IndexRecordOption::WithFreqs);
                words.push((Occur::Should, Box::new(BoostQuery::new(Box::new(query), boost))));
            }
        }
        let mut clauses = self.filter_clauses(filter);
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(words))));
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let marker = |field: Field| -> Result<SnippetGenerator> {
            let mut generator = SnippetGenerator::create(&searcher, &query, field)?;
            generator.set_max_num_chars(SNIPPET_CHARS);
            Ok(generator)
        };
        let marker = Marker { body: marker(f.body)?, title: marker(f.title)? };
        if terms.is_empty() || limit == 0 {
            return Ok(TextFound { hits: Vec::new(), marker });
        }
        // Several chunks of one record may rank: read enough to fill `limit` records.
        let mut wanted = limit * 4;
        loop {
            let top = searcher.search(&query, &TopDocs::with_limit(wanted).order_by_score())?;
            let exhausted = top.len() < wanted;
            let mut hits = Vec::new();
            let mut seen = HashSet::new();
            for (score, address) in top {
                let doc: TantivyDocument = searcher.doc(address)?;
                let Some((record, chunk)) = Self::chunk_of(text_of(&doc, f.key)) else { continue };
                if seen.insert(record) {
                    hits.push(TextHit { record, chunk, score });
                }
            }
            if hits.len() >= limit || exhausted {
                hits.truncate(limit);
                return Ok(TextFound { hits, marker });
            }
            wanted *= 4;
        }
    }

    /// How many chunks the index holds (deleted ones excluded).
    pub fn chunk_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

/// A stored text field of a document ("" if it has none).
fn text_of(doc: &TantivyDocument, field: Field) -> &str {
    doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default()
}

/// A snippet with its matched words marked `**…**`.
fn marked(snippet: &tantivy::snippet::Snippet) -> String {
    let fragment = snippet.fragment();
    let mut out = String::with_capacity(fragment.len() + 16);
    // CJK bigrams overlap: marked spans are merged first.
    let mut ranges: Vec<std::ops::Range<usize>> = snippet.highlighted().to_vec();
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    let mut at = 0;
    for range in merged {
        out.push_str(&fragment[at..range.start]);
        out.push_str("**");
        out.push_str(&fragment[range.clone()]);
        out.push_str("**");
        at = range.end;
    }
    out.push_str(&fragment[at..]);
    out.trim().to_owned()
}

/// The start of a text, cut at a character boundary, as a snippet without matches.
pub fn opening(text: &str) -> String {
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((end, _)) => format!("{}…", text[..end].trim_end()),
        None => text.to_owned(),
    }
}

/// Whether `c` belongs to a script written without spaces between words (Chinese, Japanese)
/// or whose words carry particles (Korean): indexed as character pairs.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF   // Hiragana, Katakana
        | 0x3400..=0x4DBF // CJK Extension A
        | 0x4E00..=0x9FFF // CJK Unified Ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0x1100..=0x11FF // Hangul Jamo
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0x20000..=0x2FA1F)
}

/// Whether `c` continues a word: letters, digits and the combining marks that Indic and other
/// scripts write inside words.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c as u32, 0x0300..=0x036F | 0x0900..=0x0DFF | 0x0E00..=0x0EFF | 0x1AB0..=0x1AFF)
}

/// Words of spaced scripts, and bigrams of CJK runs (a lone CJK character is its own token).
#[derive(Clone, Default)]
pub struct ScriptTokenizer {
    tokens: Vec<Token>,
}

pub struct ScriptTokenStream<'a> {
    tokens: std::vec::Drain<'a, Token>,
    current: Token,
}

impl Tokenizer for ScriptTokenizer {
    type TokenStream<'a> = ScriptTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> ScriptTokenStream<'a> {
        self.tokens.clear();
        let push = |tokens: &mut Vec<Token>, from: usize, to: usize| {
            let position = tokens.len();
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text: text[from..to].to_owned(),
                position_length: 1,
            });
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let end_of = |i: usize| chars.get(i).map_or(text.len(), |(at, _)| *at);
        let mut i = 0;
        while i < chars.len() {
            let (from, c) = chars[i];
            if is_cjk(c) {
                let mut j = i;
                while j < chars.len() && is_cjk(chars[j].1) {
                    j += 1;
                }
                if j - i == 1 {
                    push(&mut self.tokens, from, end_of(i + 1));
                }
                for (k, (at, _)) in chars.iter().enumerate().take(j.saturating_sub(1)).skip(i) {
                    push(&mut self.tokens, *at, end_of(k + 2));
                }
                i = j;
            } else if is_word(c) {
                let mut j = i;
                while j < chars.len() && is_word(chars[j].1) && !is_cjk(chars[j].1) {
                    j += 1;
                }
                push(&mut self.tokens, from, end_of(j));
                i = j;
            } else {
                i += 1;
            }
        }
        ScriptTokenStream { tokens: self.tokens.drain(..), current: Token::default() }
    }
}

impl TokenStream for ScriptTokenStream<'_> {
    fn advance(&mut self) -> bool {
        match self.tokens.next() {
            Some(token) => {
                self.current = token;
                true
            }
            None => false,
        }
    }

    fn token(&self) -> &Token {
        &self.current
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    #[test]
    fn english_stop_words_are_dropped_before_stemming_and_other_scripts_kept() {
        assert_eq!(tokens("The size of a file, in blocks"), vec!["size", "file", "block"]);
        assert_eq!(tokens("Паспорт и виза"), vec!["паспорт", "и", "виза"]);
        assert_eq!(tokens("東京都"), vec!["東京", "京都"]);
    }
}
