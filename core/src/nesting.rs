//! How deeply an input nests, measured on its bytes before the YAML parser
//! sees them (JSON's depth is counted by the reader, see `parse`).
//!
//! The YAML scanner (libyaml, through `serde_yaml_ng`) slows down without
//! bound on deeply nested flow collections: a document of a few megabytes of
//! `[` kept it busy for minutes, long before the deserializer's own recursion
//! limit could refuse it. So the depth is measured first, in one pass that
//! follows the token rules of libyaml's scanner closely enough that it never
//! reports less than the parser will build:
//!
//! * flow collections `[` `{` nest, `]` `}` close; a bracket inside a quoted
//!   scalar, a plain scalar, a block scalar (`|`, `>`) or a comment does not
//!   count, and a quote counts as one only where the scanner starts a token;
//! * block collections nest by indentation, as the scanner rolls them: a
//!   `- ` entry, a `? ` key, or a `key: ` deeper than the current level opens
//!   one; a `- ` at the level of the mapping that owns it (an indentless
//!   sequence) opens one too, as it does in the parsed value;
//! * JSON is YAML's flow syntax, so one scanner serves both.
//!
//! Where the rules are unclear (an input the parser will refuse anyway) the
//! scanner errs toward counting more, never less.

/// The deepest nesting of mappings and sequences in `input`, a top-level
/// collection being level 1; or, as soon as the nesting passes `limit`,
/// `limit + 1` (so the scan's memory stays bounded by the limit, not by
/// the input).
pub(crate) fn max_depth(input: &[u8], limit: usize) -> usize {
    let mut scan = Scan {
        b: input,
        i: 0,
        col: 0,
        flow: 0,
        block: Vec::new(),
        key_col: None,
        max: 0,
        limit,
    };
    scan.run();
    scan.max.min(limit.saturating_add(1))
}

struct Level {
    col: usize,
    /// A `- ` sequence at the column of the mapping that holds it: libyaml
    /// does not roll an indent for it, but it is a level of the value.
    indentless: bool,
    /// Rolled by a key (a mapping), not by `- ` (a sequence).
    mapping: bool,
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// The column of `i`, in characters.
    col: usize,
    flow: usize,
    block: Vec<Level>,
    /// The column where the token that could be a simple key began, on this
    /// line, in block context.
    key_col: Option<usize>,
    max: usize,
    limit: usize,
}

fn is_break(c: Option<u8>) -> bool {
    matches!(c, Some(b'\n' | b'\r'))
}

fn is_blankz(c: Option<u8>) -> bool {
    matches!(c, None | Some(b' ' | b'\t' | b'\n' | b'\r'))
}

fn is_flow_indicator(c: Option<u8>) -> bool {
    matches!(c, Some(b',' | b'[' | b']' | b'{' | b'}'))
}

impl Scan<'_> {
    fn at(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }

    fn cur(&self) -> Option<u8> {
        self.at(0)
    }

    fn bump(&mut self) {
        if let Some(c) = self.cur() {
            if c == b'\n' || c == b'\r' {
                self.col = 0;
                self.key_col = None;
            } else if c & 0xC0 != 0x80 {
                self.col += 1;
            }
            self.i += 1;
        }
    }

    fn depth(&self) -> usize {
        self.block.len() + self.flow
    }

    fn note_depth(&mut self) {
        self.max = self.max.max(self.depth());
    }

    /// libyaml's `parser.indent`: the column of the innermost rolled block
    /// collection, -1 at the top.
    fn indent(&self) -> isize {
        self.block
            .iter()
            .rev()
            .find(|l| !l.indentless)
            .map_or(-1, |l| l.col as isize)
    }

    fn roll(&mut self, col: usize, mapping: bool) {
        if self.indent() < col as isize {
            self.block.push(Level {
                col,
                indentless: false,
                mapping,
            });
            self.note_depth();
        }
    }

    fn at_document_marker(&self) -> bool {
        self.col == 0
            && (self.b[self.i..].starts_with(b"---") || self.b[self.i..].starts_with(b"..."))
            && is_blankz(self.at(3))
    }

    fn skip_to_break(&mut self) {
        while !is_break(self.cur()) && self.cur().is_some() {
            self.bump();
        }
    }

    fn run(&mut self) {
        while self.max <= self.limit {
            // Whitespace, line breaks and comments between tokens.
            loop {
                match self.cur() {
                    Some(b' ' | b'\t' | b'\n' | b'\r') => self.bump(),
                    Some(b'#') => self.skip_to_break(),
                    _ => break,
                }
            }
            let Some(c) = self.cur() else { return };
            let col = self.col;
            let blank_after = is_blankz(self.at(1));
            if self.flow == 0 {
                while self.block.last().is_some_and(|l| l.col > col) {
                    self.block.pop();
                }
                let entry = c == b'-' && blank_after;
                if self
                    .block
                    .last()
                    .is_some_and(|l| l.indentless && l.col == col && !entry)
                {
                    self.block.pop();
                }
            }
            if self.at_document_marker() {
                self.block.clear();
                for _ in 0..3 {
                    self.bump();
                }
                continue;
            }
            match c {
                b'%' if col == 0 && self.flow == 0 => self.skip_to_break(),
                b'[' | b'{' => {
                    if self.flow == 0 {
                        self.key_col = Some(col);
                    }
                    self.flow += 1;
                    self.note_depth();
                    self.bump();
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    self.bump();
                }
                b',' => self.bump(),
                b'-' if blank_after && self.flow == 0 => {
                    let indent = self.indent();
                    if indent < col as isize {
                        self.roll(col, false);
                    } else if self.block.last().is_some_and(|l| l.mapping && l.col == col) {
                        self.block.push(Level {
                            col,
                            indentless: true,
                            mapping: false,
                        });
                        self.note_depth();
                    }
                    self.bump();
                }
                b'?' if blank_after || self.flow > 0 => {
                    if self.flow == 0 {
                        self.roll(col, true);
                    }
                    self.bump();
                }
                b':' if blank_after || self.flow > 0 => {
                    if self.flow == 0 {
                        self.roll(self.key_col.unwrap_or(col), true);
                    }
                    self.key_col = None;
                    self.bump();
                }
                b'*' | b'&' => {
                    if c == b'*' {
                        self.start_value(col);
                    }
                    self.bump();
                    while self
                        .cur()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                    {
                        self.bump();
                    }
                }
                b'!' => {
                    self.start_value(col);
                    while !is_blankz(self.cur()) {
                        self.bump();
                    }
                }
                b'|' | b'>' if self.flow == 0 => self.block_scalar(),
                b'\'' => {
                    self.start_value(col);
                    self.single_quoted();
                }
                b'"' => {
                    self.start_value(col);
                    self.double_quoted();
                }
                _ => {
                    self.start_value(col);
                    self.plain();
                }
            }
        }
    }

    /// A value token begins at `col`: in block context it may be a simple key.
    fn start_value(&mut self, col: usize) {
        if self.flow == 0 && self.key_col.is_none() {
            self.key_col = Some(col);
        }
    }

    fn single_quoted(&mut self) {
        self.bump();
        while let Some(c) = self.cur() {
            if c == b'\'' {
                if self.at(1) == Some(b'\'') {
                    self.bump();
                    self.bump();
                    continue;
                }
                self.bump();
                return;
            }
            self.bump();
        }
    }

    fn double_quoted(&mut self) {
        self.bump();
        while let Some(c) = self.cur() {
            match c {
                b'\\' => {
                    self.bump();
                    self.bump();
                }
                b'"' => {
                    self.bump();
                    return;
                }
                _ => self.bump(),
            }
        }
    }

    /// libyaml's `yaml_parser_scan_plain_scalar`, keeping only where it ends.
    fn plain(&mut self) {
        let indent = self.indent() + 1;
        loop {
            if self.at_document_marker() || self.cur() == Some(b'#') {
                return;
            }
            while !is_blankz(self.cur()) {
                let c = self.cur();
                if self.flow > 0
                    && c == Some(b':')
                    && (is_flow_indicator(self.at(1)) || self.at(1) == Some(b'?'))
                {
                    return;
                }
                if (c == Some(b':') && is_blankz(self.at(1)))
                    || (self.flow > 0 && is_flow_indicator(c))
                {
                    return;
                }
                self.bump();
            }
            if !matches!(self.cur(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                return;
            }
            while matches!(self.cur(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.bump();
            }
            if self.flow == 0 && (self.col as isize) < indent {
                return;
            }
        }
    }

    /// libyaml's `yaml_parser_scan_block_scalar`: skips the header and every
    /// content line.
    fn block_scalar(&mut self) {
        let parent = self.indent();
        self.bump();
        let mut increment = 0usize;
        for _ in 0..2 {
            match self.cur() {
                Some(b'+' | b'-') => self.bump(),
                Some(d @ b'1'..=b'9') => {
                    increment = usize::from(d - b'0');
                    self.bump();
                }
                _ => {}
            }
        }
        while matches!(self.cur(), Some(b' ' | b'\t')) {
            self.bump();
        }
        if self.cur() == Some(b'#') {
            self.skip_to_break();
        }
        if !is_break(self.cur()) {
            // libyaml refuses the document here; nothing more to skip.
            return;
        }
        self.bump_break();
        let mut indent = if increment > 0 {
            if parent >= 0 {
                parent as usize + increment
            } else {
                increment
            }
        } else {
            0
        };
        let mut max_indent = 0;
        if !self.block_breaks(&mut indent, &mut max_indent, parent) {
            return;
        }
        while self.col == indent && self.cur().is_some() {
            self.skip_to_break();
            if self.cur().is_none() {
                return;
            }
            self.bump_break();
            if !self.block_breaks(&mut indent, &mut max_indent, parent) {
                return;
            }
        }
    }

    fn bump_break(&mut self) {
        if self.cur() == Some(b'\r') && self.at(1) == Some(b'\n') {
            self.bump();
        }
        self.bump();
    }

    /// libyaml's `yaml_parser_scan_block_scalar_breaks`; false where libyaml
    /// stops with an error.
    fn block_breaks(&mut self, indent: &mut usize, max_indent: &mut usize, parent: isize) -> bool {
        loop {
            while (*indent == 0 || self.col < *indent) && self.cur() == Some(b' ') {
                self.bump();
            }
            *max_indent = (*max_indent).max(self.col);
            if (*indent == 0 || self.col < *indent) && self.cur() == Some(b'\t') {
                return false;
            }
            if !is_break(self.cur()) {
                break;
            }
            self.bump_break();
        }
        if *indent == 0 {
            *indent = (*max_indent).max((parent + 1).max(1) as usize);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::max_depth;
    use proptest::prelude::*;
    use serde_json::Value;

    fn depth_of(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
            Value::Object(m) => 1 + m.values().map(depth_of).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn counts_flow_block_and_mixed_nesting() {
        for (input, depth) in [
            ("", 0),
            ("a", 0),
            ("[]", 1),
            ("[[[1]], {\"a\": {\"b\": []}}]", 4),
            ("a: 1", 1),
            ("a:\n  b:\n    c: 1\n", 3),
            ("- - - 1\n", 3),
            ("a:\n- b: 1\n  c: [[2]]\n", 5),
            ("a:\n- 1\nb:\n- 2\n", 2),
            ("a: |\n  [[[[\n  \"\nb: 1\n", 1),
            ("a: >-\n    {{{{\n\n    '\nb: [1]\n", 2),
            ("a: don't [[[[\n  still plain ' [[\nb: 1\n", 1),
            ("a: \"[[[[ \\\" [[\"\nb: '[[[ '' ]]'\n", 1),
            ("# [[[[[\na: 1 # {{{{\n", 1),
            ("a: 1\n---\n- - 1\n", 2),
            ("[a, 'b]', \"c]\", d'e, [f]]", 2),
        ] {
            assert_eq!(max_depth(input.as_bytes(), usize::MAX), depth, "{input:?}");
        }
    }

    #[test]
    fn stops_once_past_the_limit() {
        let deep = "- ".repeat(1000);
        assert_eq!(max_depth(deep.as_bytes(), 64), 65);
        assert_eq!(max_depth(b"[[1]]", 2), 2);
        assert_eq!(max_depth(b"[[1]]", 1), 2);
    }

    /// Quotes where the scanner does not start a token hide nothing: each of
    /// these tries to make the pre-scan skip the deep line.
    #[test]
    fn cannot_be_fooled_into_counting_less() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        for (before, after) in [
            ("a: x 'y\n", "\nc: 'z\n"),
            ("a: x\n  \"\n", "\nc: \"\n"),
            ("a: |\n  x\n  \"\n", "\nc: \"\n"),
            ("- k: |\n    x\n    \"\n", "\nc: \"\n"),
            ("a: [x'y, z\"]\n", "\nc: ']\n"),
            ("a: !t'x\n", "\nc: 'x\n"),
            ("a: \"\\\"\"\n", "\n"),
            ("a: 'it''s'\n", "\n"),
        ] {
            let input = format!("{before}b: {deep}{after}");
            assert!(
                max_depth(input.as_bytes(), usize::MAX) >= 100,
                "{input:?}: {}",
                max_depth(input.as_bytes(), usize::MAX)
            );
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z\\[\\]{}'\" :#|>-]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(12, 64, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z'\\[\" -]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// On what serializers write, the pre-scan measures exactly the
        /// depth of the value (never less, or it could be fooled; never
        /// more, or it would refuse good input).
        #[test]
        fn measures_serialized_values_exactly(v in value()) {
            let want = depth_of(&v);
            let json = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(max_depth(json.as_bytes(), usize::MAX), want, "{}", json);
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            prop_assert_eq!(max_depth(pretty.as_bytes(), usize::MAX), want, "{}", pretty);
            #[cfg(feature = "yaml")]
            {
                let yaml = serde_yaml_ng::to_string(&v).unwrap();
                prop_assert_eq!(max_depth(yaml.as_bytes(), usize::MAX), want, "{}", yaml);
            }
        }
    }
}
