//! A YAML tree that remembers where each node came from.
//!
//! Compose errors name the file, line and key (`docker compose config`
//! does), so the loader keeps a position on every node. yaml-rust2's event
//! parser gives a `Marker` per event; this module builds the tree from those
//! events, resolving anchors, aliases and `<<` merge keys as go-yaml does.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts in its file (1-based line and column).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// A YAML value with its position.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub v: Val,
    /// Where it starts.
    pub pos: Pos,
}

/// The shapes of a YAML value. Scalars stay text until the schema says
/// which type a key wants: `8080` may be a port string or a number.
#[derive(Debug, Clone)]
pub enum Val {
    /// `~`, `null` or nothing.
    Null,
    /// A scalar; `plain` is false for quoted and block scalars, which are
    /// always strings.
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order; keys keep their positions.
    Map(Vec<(String, Pos, Node)>),
    /// A value tagged `!reset` (drop what earlier files said) or
    /// `!override` (replace instead of merging).
    Tagged(String, Box<Node>),
}

/// A YAML syntax error with its position.
#[derive(Debug, thiserror::Error)]
#[error("yaml: line {line}: {msg}")]
pub struct SyntaxError {
    /// Line of the error.
    pub line: usize,
    /// What the parser said.
    pub msg: String,
}

impl Node {
    /// The text of a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.v {
            Val::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.v {
            Val::Map(m) => m.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }

    /// YAML 1.1/1.2 null as go-yaml reads a plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(self.v, Val::Null)
    }
}

fn pos(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

enum Frame {
    Seq(Vec<Node>, Pos, usize),
    Map(Vec<(String, Pos, Node)>, Pos, usize, Option<(String, Pos)>),
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    error: Option<String>,
    tags: Vec<Option<String>>,
}

/// `!reset` and `!override` are the only tags compose gives a meaning to.
fn tag_name(tag: Option<&yaml_rust2::parser::Tag>) -> Option<String> {
    let t = tag?;
    match t.suffix.as_str() {
        "reset" | "override" if t.handle == "!" => Some(t.suffix.clone()),
        _ => None,
    }
}

fn retag(node: Node, tag: Option<String>) -> Node {
    match tag {
        Some(t) => Node {
            pos: node.pos,
            v: Val::Tagged(t, Box::new(node)),
        },
        None => node,
    }
}

fn wrap(node: Node, tag: Option<&yaml_rust2::parser::Tag>) -> Node {
    retag(node, tag_name(tag))
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(entries, _, _, key)) => match key.take() {
                None => {
                    let k = match &node.v {
                        Val::Scalar { text, .. } => text.clone(),
                        Val::Null => String::new(),
                        _ => {
                            self.error.get_or_insert_with(|| {
                                format!("line {}: mapping keys must be scalars", node.pos.line)
                            });
                            String::new()
                        }
                    };
                    *key = Some((k, node.pos));
                }
                Some((k, kpos)) => {
                    if k == "<<" {
                        merge_into(entries, node);
                    } else if let Some(e) = entries.iter_mut().find(|(ek, _, _)| *ek == k) {
                        // go-yaml v3 refuses duplicate keys.
                        self.error.get_or_insert_with(|| {
                            format!(
                                "line {}: mapping key \"{}\" already defined at line {}",
                                kpos.line, k, e.1.line
                            )
                        });
                    } else {
                        entries.push((k, kpos, node));
                    }
                }
            },
        }
    }
}

/// `<<: *base` or `<<: [*a, *b]`: keys not already present are copied in.
fn merge_into(entries: &mut Vec<(String, Pos, Node)>, node: Node) {
    let sources = match node.v {
        Val::Seq(items) => items,
        _ => vec![node],
    };
    for src in sources {
        if let Val::Map(m) = src.v {
            for (k, p, n) in m {
                if !entries.iter().any(|(ek, _, _)| *ek == k) {
                    entries.push((k, p, n));
                }
            }
        }
    }
}

/// go-yaml's resolution of plain scalars to null.
fn plain_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let p = pos(&mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == TScalarStyle::Plain;
                let v = if plain && plain_null(&text) {
                    Val::Null
                } else {
                    Val::Scalar { text, plain }
                };
                let node = wrap(Node { v, pos: p }, tag.as_ref());
                self.push(node, anchor);
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    v: Val::Null,
                    pos: p,
                });
                self.push(node, 0);
            }
            Event::SequenceStart(anchor, tag) => {
                self.tags.push(tag_name(tag.as_ref()));
                self.stack.push(Frame::Seq(Vec::new(), p, anchor))
            }
            Event::MappingStart(anchor, tag) => {
                self.tags.push(tag_name(tag.as_ref()));
                self.stack.push(Frame::Map(Vec::new(), p, anchor, None))
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(items, p, a)) => {
                    let tag = self.tags.pop().flatten();
                    let node = retag(
                        Node {
                            v: Val::Seq(items),
                            pos: p,
                        },
                        tag,
                    );
                    self.push(node, a)
                }
                Some(Frame::Map(entries, p, a, _)) => {
                    let tag = self.tags.pop().flatten();
                    let node = retag(
                        Node {
                            v: Val::Map(entries),
                            pos: p,
                        },
                        tag,
                    );
                    self.push(node, a)
                }
                None => {}
            },
            _ => {}
        }
    }
}

/// Parses one YAML document (an empty file is an empty mapping).
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        error: None,
        tags: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut b, false).map_err(|e| SyntaxError {
        line: e.marker().line(),
        msg: e.info().to_string(),
    })?;
    if let Some(msg) = b.error {
        let (line, msg) = match msg.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
            Some((l, m)) => (l.parse().unwrap_or(0), m.to_string()),
            None => (0, msg),
        };
        return Err(SyntaxError { line, msg });
    }
    Ok(b.docs.into_iter().next().unwrap_or(Node {
        v: Val::Map(Vec::new()),
        pos: Pos { line: 1, col: 1 },
    }))
}
