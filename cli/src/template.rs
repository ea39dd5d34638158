//! `--format`: the subset of Go's text/template the docker CLI's users
//! write, over JSON values (each command turns its rows or documents into
//! `serde_json::Value`s with docker's field names). One module for `ps`,
//! `images`, `stats`, `inspect -f`, `network ls`, `volume ls`.
//!
//! Supported: text; `{{.}}`, `{{.A.B}}` field paths; literals (`"s"`,
//! numbers, `true`/`false`); the functions `json`, `index`, `join`,
//! `upper`, `lower`, `title`, `len`, `split`, `println`, `printf` (`%s`,
//! `%d`, `%v`, `%q`); pipes (`{{.Names | upper}}`); parenthesised
//! calls; `{{if}}`/`{{else}}`/`{{end}}`, `{{range}}`/`{{end}}`;
//! `{{- ` / ` -}}` trimming. The docker CLI's own rules: `\t` and `\n`
//! written literally become a tab and a newline; `table …` prints a header
//! row (the columns' names) and lays the cells out as docker's tabwriter
//! does; `json` alone is `{{json .}}`; `table` alone the default table.

use serde_json::Value;

/// A template that does not parse or fails on a value.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template parsing error: {0}")]
    Parse(String),
    #[error("template: {0}")]
    Exec(String),
}

type Res<T> = Result<T, TemplateError>;

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
}

/// Commands joined by `|`: each result is the last argument of the next.
type Pipe = Vec<Cmd>;

#[derive(Debug, Clone)]
enum Arg {
    Field(Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Func(String),
    Sub(Pipe),
}

type Cmd = Vec<Arg>;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses `src` (after the docker CLI's `\t`/`\n` replacement).
    pub fn parse(src: &str) -> Res<Template> {
        let src = src.replace("\\t", "\t").replace("\\n", "\n");
        let tokens = lex(&src)?;
        let mut pos = 0;
        let (nodes, end) = parse_nodes(&tokens, &mut pos)?;
        if let Some(e) = end {
            return Err(TemplateError::Parse(format!("unexpected {{{{{e}}}}}")));
        }
        Ok(Template { nodes })
    }

    /// Renders the template for `v`.
    pub fn render(&self, v: &Value) -> Res<String> {
        let mut out = String::new();
        exec(&self.nodes, v, &mut out)?;
        Ok(out)
    }
}

enum Tok {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Res<Vec<Tok>> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(i) = rest.find("{{") {
        let mut text = &rest[..i];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[i + 2..];
        let j = after
            .find("}}")
            .ok_or_else(|| TemplateError::Parse("unclosed action".into()))?;
        let mut inner = &after[..j];
        if let Some(s) = inner.strip_prefix("- ") {
            inner = s;
            text = text.trim_end();
        }
        trim_next = false;
        if let Some(s) = inner.strip_suffix(" -") {
            inner = s;
            trim_next = true;
        }
        if !text.is_empty() {
            out.push(Tok::Text(text.to_string()));
        }
        out.push(Tok::Action(inner.trim().to_string()));
        rest = &after[j + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        out.push(Tok::Text(text.to_string()));
    }
    Ok(out)
}

/// Parses until `{{end}}`/`{{else}}` (returned) or the end.
fn parse_nodes(toks: &[Tok], pos: &mut usize) -> Res<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s.clone())),
            Tok::Action(a) if a == "end" || a == "else" => return Ok((nodes, Some(a.clone()))),
            Tok::Action(a) if a.starts_with("/*") => {}
            Tok::Action(a) => {
                let (kw, rest) = a
                    .split_once(char::is_whitespace)
                    .unwrap_or((a.as_str(), ""));
                if kw == "if" || kw == "range" {
                    let pipe = parse_pipe(rest)?;
                    let (body, end) = parse_nodes(toks, pos)?;
                    let other = match end.as_deref() {
                        Some("else") => {
                            let (o, end2) = parse_nodes(toks, pos)?;
                            if end2.as_deref() != Some("end") {
                                return Err(TemplateError::Parse(format!("unclosed {kw}")));
                            }
                            o
                        }
                        Some("end") => Vec::new(),
                        _ => return Err(TemplateError::Parse(format!("unclosed {kw}"))),
                    };
                    nodes.push(if kw == "if" {
                        Node::If(pipe, body, other)
                    } else {
                        Node::Range(pipe, body, other)
                    });
                } else {
                    nodes.push(Node::Action(parse_pipe(a)?));
                }
            }
        }
    }
    Ok((nodes, None))
}

/// Splits an action into words: quoted strings and parenthesised groups
/// stay whole.
fn words(s: &str) -> Res<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == '"' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c == '"' {
                    i += 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(TemplateError::Parse("unterminated quoted string".into()));
            }
            i += 1;
        } else if c == '(' {
            let mut depth = 0;
            while i < chars.len() {
                match chars[i] {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(TemplateError::Parse("unclosed left paren".into()));
            }
            i += 1;
        } else if c == '|' {
            i += 1;
        } else {
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '|' {
                i += 1;
            }
        }
        out.push(chars[start..i].iter().collect());
    }
    Ok(out)
}

fn parse_pipe(s: &str) -> Res<Pipe> {
    let mut pipe = Vec::new();
    let mut cmd = Vec::new();
    for w in words(s)? {
        if w == "|" {
            if cmd.is_empty() {
                return Err(TemplateError::Parse("missing command in pipe".into()));
            }
            pipe.push(std::mem::take(&mut cmd));
            continue;
        }
        cmd.push(parse_arg(&w)?);
    }
    if cmd.is_empty() {
        return Err(TemplateError::Parse(format!(
            "missing value for command: {s:?}"
        )));
    }
    pipe.push(cmd);
    Ok(pipe)
}

fn parse_arg(w: &str) -> Res<Arg> {
    if let Some(inner) = w.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        return Ok(Arg::Sub(parse_pipe(inner)?));
    }
    if w.starts_with('"') {
        return serde_json::from_str::<String>(w)
            .map(Arg::Str)
            .map_err(|_| TemplateError::Parse(format!("bad string {w}")));
    }
    if let Some(s) = w.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        return Ok(Arg::Str(s.to_string()));
    }
    if w == "." {
        return Ok(Arg::Field(Vec::new()));
    }
    if let Some(path) = w.strip_prefix('.') {
        return Ok(Arg::Field(path.split('.').map(str::to_string).collect()));
    }
    if let Some(path) = w.strip_prefix("$.") {
        return Ok(Arg::Field(path.split('.').map(str::to_string).collect()));
    }
    match w {
        "true" => return Ok(Arg::Bool(true)),
        "false" => return Ok(Arg::Bool(false)),
        _ => {}
    }
    if let Ok(n) = w.parse::<f64>() {
        return Ok(Arg::Num(n));
    }
    if w.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Ok(Arg::Func(w.to_string()));
    }
    Err(TemplateError::Parse(format!("unexpected {w:?} in command")))
}

fn exec(nodes: &[Node], dot: &Value, out: &mut String) -> Res<()> {
    for n in nodes {
        match n {
            Node::Text(s) => out.push_str(s),
            Node::Action(p) => out.push_str(&show(&eval_pipe(p, dot)?)),
            Node::If(p, yes, no) => {
                if truthy(&eval_pipe(p, dot)?) {
                    exec(yes, dot, out)?;
                } else {
                    exec(no, dot, out)?;
                }
            }
            Node::Range(p, body, other) => {
                let v = eval_pipe(p, dot)?;
                let items: Vec<Value> = match v {
                    Value::Array(a) => a,
                    Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
                    Value::Null => Vec::new(),
                    other => {
                        return Err(TemplateError::Exec(format!(
                            "range can't iterate over {}",
                            show(&other)
                        )))
                    }
                };
                if items.is_empty() {
                    exec(other, dot, out)?;
                }
                for it in &items {
                    exec(body, it, out)?;
                }
            }
        }
    }
    Ok(())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// A value printed as Go's template prints it.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", show(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn eval_pipe(p: &Pipe, dot: &Value) -> Res<Value> {
    let mut last: Option<Value> = None;
    for cmd in p {
        last = Some(eval_cmd(cmd, dot, last.take())?);
    }
    Ok(last.unwrap_or(Value::Null))
}

fn field(v: &Value, path: &[String]) -> Value {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(n) => cur = n,
            None => return Value::Null,
        }
    }
    cur.clone()
}

fn eval_arg(a: &Arg, dot: &Value) -> Res<Value> {
    Ok(match a {
        Arg::Field(p) => field(dot, p),
        Arg::Str(s) => Value::String(s.clone()),
        Arg::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, |n| {
            if n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                Value::from(n.as_f64().unwrap_or(0.0) as i64)
            } else {
                Value::Number(n)
            }
        }),
        Arg::Bool(b) => Value::Bool(*b),
        Arg::Sub(p) => eval_pipe(p, dot)?,
        Arg::Func(f) => call(f, Vec::new())?,
    })
}

fn eval_cmd(cmd: &Cmd, dot: &Value, piped: Option<Value>) -> Res<Value> {
    let (first, rest) = cmd
        .split_first()
        .ok_or_else(|| TemplateError::Exec("empty command".into()))?;
    let mut args = rest
        .iter()
        .map(|a| eval_arg(a, dot))
        .collect::<Res<Vec<_>>>()?;
    args.extend(piped);
    match first {
        Arg::Func(f) => call(f, args),
        other if args.is_empty() => eval_arg(other, dot),
        _ => Err(TemplateError::Exec(
            "can't give argument to non-function".into(),
        )),
    }
}

fn as_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => show(other),
    }
}

fn call(f: &str, args: Vec<Value>) -> Res<Value> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let want = |n: usize| -> Res<()> {
        if args.len() < n {
            Err(TemplateError::Exec(format!(
                "wrong number of args for {f}: want {n} got {}",
                args.len()
            )))
        } else {
            Ok(())
        }
    };
    Ok(match f {
        "json" => {
            want(1)?;
            Value::String(serde_json::to_string(&arg(0)).unwrap_or_default())
        }
        "upper" => Value::String(as_str(&arg(0)).to_uppercase()),
        "lower" => Value::String(as_str(&arg(0)).to_lowercase()),
        "title" => {
            let s = as_str(&arg(0));
            let mut c = s.chars();
            Value::String(match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            })
        }
        "len" => Value::from(match arg(0) {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            Value::String(s) => s.len(),
            _ => 0,
        }),
        "join" => {
            want(2)?;
            let sep = as_str(&arg(1));
            match arg(0) {
                Value::Array(a) => {
                    Value::String(a.iter().map(as_str).collect::<Vec<_>>().join(&sep))
                }
                other => Value::String(as_str(&other)),
            }
        }
        "split" => {
            want(2)?;
            Value::Array(
                as_str(&arg(0))
                    .split(as_str(&arg(1)).as_str())
                    .map(|s| Value::String(s.into()))
                    .collect(),
            )
        }
        "index" => {
            want(2)?;
            let mut cur = arg(0);
            for k in &args[1..] {
                cur = match (k, &cur) {
                    (Value::Number(n), Value::Array(a)) => n
                        .as_u64()
                        .and_then(|i| a.get(i as usize).cloned())
                        .ok_or_else(|| TemplateError::Exec(format!("index out of range: {n}")))?,
                    (k, Value::Object(m)) => m.get(&as_str(k)).cloned().unwrap_or(Value::Null),
                    (_, Value::Null) => Value::Null,
                    _ => return Err(TemplateError::Exec("can't index item".into())),
                };
            }
            cur
        }
        "println" => Value::String(args.iter().map(as_str).collect::<Vec<_>>().join(" ") + "\n"),
        "print" => Value::String(args.iter().map(as_str).collect::<Vec<_>>().join(" ")),
        "printf" => {
            want(1)?;
            Value::String(printf(&as_str(&arg(0)), &args[1..]))
        }
        _ => return Err(TemplateError::Parse(format!("function {f:?} not defined"))),
    })
}

fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(
                &serde_json::to_string(&as_str(it.next().unwrap_or(&Value::Null)))
                    .unwrap_or_default(),
            ),
            Some(_) => out.push_str(&as_str(it.next().unwrap_or(&Value::Null))),
            None => out.push('%'),
        }
    }
    out
}

/// A `--format` value as the docker CLI reads it.
#[derive(Debug, Clone)]
pub enum Format {
    /// No format, or `table` alone: the command's own table.
    Default,
    /// `table TEMPLATE`: a header row, then one row per item, laid out in
    /// columns.
    Table(Template),
    /// One rendering per item, each followed by a newline.
    Raw(Template),
}

impl Format {
    /// Parses `--format`'s value (`json` is `{{json .}}`).
    pub fn parse(f: Option<&str>) -> Res<Format> {
        let Some(f) = f else {
            return Ok(Format::Default);
        };
        let t = f.trim();
        if t.is_empty() || t == "table" {
            return Ok(Format::Default);
        }
        if t == "json" {
            return Ok(Format::Raw(Template::parse("{{json .}}")?));
        }
        if let Some(rest) = t.strip_prefix("table ") {
            return Ok(Format::Table(Template::parse(rest.trim())?));
        }
        Ok(Format::Raw(Template::parse(f)?))
    }

    /// Renders `items` (docker's row objects); `headers` maps a field name
    /// to its column title (an unknown field's title is its name in upper
    /// case). `None` for [`Format::Default`].
    pub fn render(&self, items: &[Value], headers: &[(&str, &str)]) -> Res<Option<String>> {
        match self {
            Format::Default => Ok(None),
            Format::Raw(t) => {
                let mut s = String::new();
                for it in items {
                    s.push_str(&t.render(it)?);
                    s.push('\n');
                }
                Ok(Some(s))
            }
            Format::Table(t) => {
                let mut head = serde_json::Map::new();
                if let Some(first) = items.first().and_then(Value::as_object) {
                    for k in first.keys() {
                        head.insert(k.clone(), Value::String(k.to_uppercase()));
                    }
                }
                for (k, h) in headers {
                    head.insert(k.to_string(), Value::String(h.to_string()));
                }
                let mut lines = vec![t.render(&Value::Object(head))?];
                for it in items {
                    lines.push(t.render(it)?);
                }
                Ok(Some(tabwriter(&lines)))
            }
        }
    }
}

/// docker's tabwriter (minwidth 10, padding 3): tab-separated cells of
/// each line padded to their column's width.
pub fn tabwriter(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .flat_map(|l| l.split('\n'))
        .map(|l| l.split('\t').collect())
        .collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        // The last cell of a line is not a column.
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in rows {
        let mut l = String::new();
        for (i, c) in r.iter().enumerate() {
            l.push_str(c);
            if i + 1 < r.len() {
                let w = (widths[i] + 3).max(10);
                l.push_str(&" ".repeat(w - c.chars().count()));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn fields_functions_and_control() {
        let v = json!({"State": {"Status": "running", "Health": {"Status": "healthy"}},
                       "Id": "abc", "Config": {"Env": ["A=1", "B=2"]}, "Names": "web"});
        assert_eq!(r("{{.State.Status}}", &v), "running");
        assert_eq!(r("{{.State.Health.Status}}", &v), "healthy");
        assert_eq!(r("{{json .Config}}", &v), r#"{"Env":["A=1","B=2"]}"#);
        assert_eq!(r("{{index .Config.Env 1}}", &v), "B=2");
        assert_eq!(r("{{range .Config.Env}}[{{.}}]{{end}}", &v), "[A=1][B=2]");
        assert_eq!(r("{{join .Config.Env \",\"}}", &v), "A=1,B=2");
        assert_eq!(r("{{.Names | upper}}", &v), "WEB");
        assert_eq!(r("{{if .Id}}yes{{else}}no{{end}}", &v), "yes");
        assert_eq!(r("{{if .Nope}}yes{{else}}no{{end}}", &v), "no");
        assert_eq!(r("{{.Nope}}", &v), "<no value>");
        assert_eq!(r("a\\tb", &v), "a\tb");
        assert_eq!(r("{{printf \"%s-%s\" .Id .Names}}", &v), "abc-web");
        assert!(Template::parse("{{if .X}}").is_err());
        assert!(Template::parse("{{nope .X}}").unwrap().render(&v).is_err());
    }

    #[test]
    fn tables_get_headers_and_columns() {
        let items = vec![json!({"ID": "abc", "Status": "Up 1 second"})];
        let f = Format::parse(Some("table {{.ID}}\\t{{.Status}}")).unwrap();
        let s = f
            .render(&items, &[("ID", "CONTAINER ID")])
            .unwrap()
            .unwrap();
        assert_eq!(s, "CONTAINER ID   STATUS\nabc            Up 1 second\n");
        let f = Format::parse(Some("{{json .}}")).unwrap();
        assert_eq!(
            f.render(&items, &[]).unwrap().unwrap(),
            "{\"ID\":\"abc\",\"Status\":\"Up 1 second\"}\n"
        );
    }
}
