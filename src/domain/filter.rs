//! Search filters: a subset of AIP-160, read by a small parser of our own
//! into a tree that each store evaluates its own way (the memory store on
//! [`User`]s, the SQL stores as a WHERE clause).
//!
//! ```text
//! filter     := expression?
//! expression := sequence ("AND" sequence)*
//! sequence   := term term*                  (juxtaposition is AND)
//! term       := factor ("OR" factor)*       (OR binds tighter than AND)
//! factor     := ("NOT" | "-") factor | "(" expression ")" | comparison
//! comparison := field op value
//! field      := name | email | bio | role | created_at | updated_at | labels.KEY
//! op         := = | != | : | < | <= | > | >=
//! value      := "quoted string" | word
//! ```
//!
//! Strings match without regard to case: both sides are folded with
//! [`fold`], which is also what the SQL stores keep beside each column. A
//! label that a user does not have matches no comparison, so its negation
//! (`labels.team != "core"`, or `NOT labels.team = "core"`) matches it.

use std::fmt;

use super::labels;
use super::{Role, User};

/// Longest filter, in bytes.
pub const MAX_FILTER_BYTES: usize = 2048;
/// Most comparisons in one filter.
pub const MAX_COMPARISONS: usize = 64;
/// Deepest nesting of parentheses and negations: the parser recurses once
/// per level.
pub const MAX_DEPTH: usize = 32;

/// The form strings are compared in: Unicode lower case.
pub fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// A string field a filter can test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextField {
    Name,
    Email,
    Bio,
    Label(String),
}

/// A time field a filter can test, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeField {
    CreatedAt,
    UpdatedAt,
}

/// An ordering comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn holds<T: Ord>(self, left: &T, right: &T) -> bool {
        match self {
            Cmp::Lt => left < right,
            Cmp::Le => left <= right,
            Cmp::Gt => left > right,
            Cmp::Ge => left >= right,
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// What a string must be, its operand already folded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextTest {
    Equals(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    Compare(Cmp, String),
}

impl TextTest {
    fn holds(&self, folded: &str) -> bool {
        match self {
            TextTest::Equals(v) => folded == v,
            TextTest::StartsWith(v) => folded.starts_with(v.as_str()),
            TextTest::EndsWith(v) => folded.ends_with(v.as_str()),
            TextTest::Contains(v) => folded.contains(v.as_str()),
            TextTest::Compare(cmp, v) => cmp.holds(&folded, &v.as_str()),
        }
    }
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Text(TextField, TextTest),
    HasLabel(String),
    Role(Role),
    Time(TimeField, Cmp, i64),
    TimeEquals(TimeField, i64),
}

impl Filter {
    /// Whether `user` matches.
    pub fn matches(&self, user: &User) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(user)),
            Filter::Or(any) => any.iter().any(|f| f.matches(user)),
            Filter::Not(inner) => !inner.matches(user),
            Filter::Text(field, test) => match field {
                TextField::Name => test.holds(&fold(user.name.as_str())),
                TextField::Email => test.holds(&user.email.unique_key()),
                TextField::Bio => test.holds(
                    &user
                        .bio
                        .as_ref()
                        .map_or_else(String::new, |b| fold(b.as_str())),
                ),
                TextField::Label(key) => user.labels.get(key).is_some_and(|v| test.holds(&fold(v))),
            },
            Filter::HasLabel(key) => user.labels.contains_key(key),
            Filter::Role(role) => user.role == *role,
            Filter::Time(field, cmp, at) => cmp.holds(&time(user, *field), at),
            Filter::TimeEquals(field, at) => time(user, *field) == *at,
        }
    }

    /// Both filters.
    pub fn and(self, other: Filter) -> Filter {
        match self {
            Filter::And(mut all) => {
                all.push(other);
                Filter::And(all)
            }
            one => Filter::And(vec![one, other]),
        }
    }
}

fn time(user: &User, field: TimeField) -> i64 {
    match field {
        TimeField::CreatedAt => user.created_at,
        TimeField::UpdatedAt => user.updated_at,
    }
}

/// A filter that does not parse: where, and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// 1-based, in characters.
    pub position: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.position, self.message)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Op(&'static str),
    /// A quoted string, unescaped.
    Quoted(String),
    /// Anything else between spaces, parentheses, quotes and operators.
    Word(String),
}

/// Where a token starts (1-based, in characters), and the token.
type Spanned = (usize, Token);

fn lex(text: &str) -> Result<Vec<Spanned>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let error = |position: usize, message: &str| FilterError {
        position: position + 1,
        message: message.to_owned(),
    };
    if let Some(at) = chars
        .iter()
        .position(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        // No stored text holds one, and a NUL would end a SQL pattern early.
        return Err(error(at, "a filter may not hold control characters"));
    }
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push((start + 1, Token::Open));
                i += 1;
            }
            ')' => {
                tokens.push((start + 1, Token::Close));
                i += 1;
            }
            '"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(error(start, "this quoted string has no closing \"")),
                        Some('"') => break,
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(&escaped @ ('"' | '\\')) => value.push(escaped),
                                _ => {
                                    return Err(error(
                                        i,
                                        "expected \\\" or \\\\ after a backslash",
                                    ));
                                }
                            }
                            i += 2;
                        }
                        Some(&c) => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                tokens.push((start + 1, Token::Quoted(value)));
            }
            '=' | ':' => {
                tokens.push((start + 1, Token::Op(if c == '=' { "=" } else { ":" })));
                i += 1;
            }
            '!' | '<' | '>' => {
                let two = chars.get(i + 1) == Some(&'=');
                let op = match (c, two) {
                    ('!', true) => "!=",
                    ('!', false) => {
                        return Err(error(start, "expected != ('!' alone is no operator)"));
                    }
                    ('<', true) => "<=",
                    ('<', false) => "<",
                    ('>', true) => ">=",
                    _ => ">",
                };
                tokens.push((start + 1, Token::Op(op)));
                i += if two { 2 } else { 1 };
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.get(i) {
                    if c.is_whitespace() || "()\"=:!<>".contains(c) {
                        break;
                    }
                    word.push(c);
                    i += 1;
                }
                tokens.push((start + 1, Token::Word(word)));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Spanned>,
    next: usize,
    /// Where the text ends, for "expected … at the end".
    end: usize,
    comparisons: usize,
    depth: usize,
}

/// Reads `text` as a filter; `None` for one that is empty or all spaces.
pub fn parse(text: &str) -> Result<Option<Filter>, FilterError> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(FilterError {
            position: 1,
            message: format!("a filter may be at most {MAX_FILTER_BYTES} bytes"),
        });
    }
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        tokens,
        next: 0,
        end: text.chars().count() + 1,
        comparisons: 0,
        depth: 0,
    };
    let filter = parser.expression()?;
    if let Some((position, token)) = parser.peek() {
        let what = match token {
            Token::Close => "a ')' with no '(' before it".to_owned(),
            other => format!("{} after a complete filter", describe(other)),
        };
        return Err(FilterError {
            position: *position,
            message: format!("unexpected {what}"),
        });
    }
    Ok(Some(filter))
}

fn describe(token: &Token) -> String {
    match token {
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::Op(op) => format!("operator {op}"),
        Token::Quoted(text) => format!("string {text:?}"),
        Token::Word(word) => format!("{word:?}"),
    }
}

fn is_keyword(token: &Token, keyword: &str) -> bool {
    matches!(token, Token::Word(word) if word == keyword)
}

impl Parser {
    fn peek(&self) -> Option<&Spanned> {
        self.tokens.get(self.next)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, FilterError> {
        let position = self.peek().map_or(self.end, |(position, _)| *position);
        Err(FilterError {
            position,
            message: message.into(),
        })
    }

    /// What the next token is, for an error saying what was expected instead.
    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the filter".to_owned(),
            Some((_, token)) => describe(token),
        }
    }

    fn expression(&mut self) -> Result<Filter, FilterError> {
        let mut all = vec![self.sequence()?];
        while self.peek().is_some_and(|(_, t)| is_keyword(t, "AND")) {
            self.next += 1;
            all.push(self.sequence()?);
        }
        Ok(flatten(all, Filter::And))
    }

    /// Terms side by side, until AND, ')' or the end.
    fn sequence(&mut self) -> Result<Filter, FilterError> {
        let mut all = vec![self.term()?];
        while let Some((_, token)) = self.peek() {
            if *token == Token::Close || is_keyword(token, "AND") {
                break;
            }
            all.push(self.term()?);
        }
        Ok(flatten(all, Filter::And))
    }

    fn term(&mut self) -> Result<Filter, FilterError> {
        let mut any = vec![self.factor()?];
        while self.peek().is_some_and(|(_, t)| is_keyword(t, "OR")) {
            self.next += 1;
            any.push(self.factor()?);
        }
        Ok(flatten(any, Filter::Or))
    }

    fn factor(&mut self) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!(
                "a filter may nest parentheses and negations at most {MAX_DEPTH} deep"
            ));
        }
        let factor = self.factor_inner();
        self.depth -= 1;
        factor
    }

    fn factor_inner(&mut self) -> Result<Filter, FilterError> {
        let Some((_, token)) = self.peek().cloned() else {
            return self.error(
                "expected a comparison such as name = \"Ada\", found the end of the filter",
            );
        };
        match token {
            Token::Word(word) if word == "NOT" => {
                self.next += 1;
                Ok(Filter::Not(Box::new(self.factor()?)))
            }
            Token::Word(word) if word == "-" => {
                self.next += 1;
                Ok(Filter::Not(Box::new(self.factor()?)))
            }
            Token::Word(word) if word.len() > 1 && word.starts_with('-') => {
                // `-name:"x"`: the negation and the field are one word.
                let (position, _) = self.tokens[self.next];
                self.tokens[self.next] = (position + 1, Token::Word(word[1..].to_owned()));
                Ok(Filter::Not(Box::new(self.factor()?)))
            }
            Token::Open => {
                self.next += 1;
                let inner = self.expression()?;
                match self.peek() {
                    Some((_, Token::Close)) => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => self.error(format!("expected ')', found {}", self.found())),
                }
            }
            Token::Word(_) => self.comparison(),
            other => self.error(format!(
                "expected a field name (name, email, bio, role, created_at, updated_at or labels.KEY), found {}",
                describe(&other)
            )),
        }
    }

    fn comparison(&mut self) -> Result<Filter, FilterError> {
        let (field_at, Token::Word(field)) = self.tokens[self.next].clone() else {
            unreachable!("called on a word");
        };
        let field = Field::parse(&field).ok_or_else(|| FilterError {
            position: field_at,
            message: format!(
                "unknown field {field:?}: expected name, email, bio, role, created_at, updated_at or labels.KEY"
            ),
        })?;
        self.next += 1;
        let op = match self.peek() {
            Some((_, Token::Op(op))) => *op,
            _ => {
                return self.error(format!(
                    "expected an operator (=, !=, :, <, <=, > or >=) after {}, found {}",
                    field.name(),
                    self.found()
                ));
            }
        };
        self.next += 1;
        let (value_at, value) = match self.peek() {
            Some((at, Token::Quoted(text) | Token::Word(text)))
                if !matches!(text.as_str(), "AND" | "OR" | "NOT")
                    || matches!(self.tokens[self.next].1, Token::Quoted(_)) =>
            {
                (*at, text.clone())
            }
            _ => {
                return self.error(format!(
                    "expected a value after {op}, found {}",
                    self.found()
                ));
            }
        };
        self.next += 1;
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(FilterError {
                position: field_at,
                message: format!("a filter may hold at most {MAX_COMPARISONS} comparisons"),
            });
        }
        let invalid = |message: String| FilterError {
            position: value_at,
            message,
        };
        field.compare(op, value).map_err(invalid)
    }
}

/// One item stays itself; several become `make(items)`.
fn flatten(mut items: Vec<Filter>, make: fn(Vec<Filter>) -> Filter) -> Filter {
    if items.len() == 1 {
        items.pop().expect("one")
    } else {
        make(items)
    }
}

enum Field {
    Text(TextField),
    Time(TimeField),
    Role,
    Labels,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "name" => Field::Text(TextField::Name),
            "email" => Field::Text(TextField::Email),
            "bio" => Field::Text(TextField::Bio),
            "role" => Field::Role,
            "created_at" => Field::Time(TimeField::CreatedAt),
            "updated_at" => Field::Time(TimeField::UpdatedAt),
            "labels" => Field::Labels,
            other => {
                let key = other.strip_prefix("labels.")?;
                if labels::key_error(key).is_some() {
                    return None;
                }
                Field::Text(TextField::Label(key.to_owned()))
            }
        })
    }

    fn name(&self) -> String {
        match self {
            Field::Text(TextField::Name) => "name".into(),
            Field::Text(TextField::Email) => "email".into(),
            Field::Text(TextField::Bio) => "bio".into(),
            Field::Text(TextField::Label(key)) => format!("labels.{key}"),
            Field::Time(TimeField::CreatedAt) => "created_at".into(),
            Field::Time(TimeField::UpdatedAt) => "updated_at".into(),
            Field::Role => "role".into(),
            Field::Labels => "labels".into(),
        }
    }

    fn compare(self, op: &str, value: String) -> Result<Filter, String> {
        let name = self.name();
        let negate = |filter: Filter| match op {
            "!=" => Filter::Not(Box::new(filter)),
            _ => filter,
        };
        match self {
            Field::Labels => match op {
                ":" => match labels::key_error(&value) {
                    None => Ok(Filter::HasLabel(value)),
                    Some(error) => Err(format!("{error}: labels:KEY needs a label key")),
                },
                _ => Err("labels takes ':' and a key (labels:team), or a key and any operator (labels.team = \"core\")".into()),
            },
            Field::Role => match op {
                "=" | "!=" => {
                    let role = Role::from_name(&value).ok_or_else(|| {
                        format!("unknown role {value:?}: expected ADMIN, EDITOR or VIEWER")
                    })?;
                    Ok(negate(Filter::Role(role)))
                }
                _ => Err(format!("role takes = or !=, not {op}")),
            },
            Field::Time(field) => {
                let at = parse_time(&value)?;
                Ok(match op {
                    "=" => Filter::TimeEquals(field, at),
                    "!=" => Filter::Not(Box::new(Filter::TimeEquals(field, at))),
                    ":" => return Err(format!("{name} takes =, !=, <, <=, > or >=, not ':'")),
                    other => Filter::Time(field, cmp(other), at),
                })
            }
            Field::Text(field) => {
                let folded = fold(&value);
                let test = match op {
                    "=" | "!=" => {
                        let leading = folded.starts_with('*');
                        let body = folded.strip_prefix('*').unwrap_or(&folded);
                        let trailing = body.ends_with('*');
                        let body = body.strip_suffix('*').unwrap_or(body).to_owned();
                        match (leading, trailing) {
                            (false, false) => TextTest::Equals(body),
                            (false, true) => TextTest::StartsWith(body),
                            (true, false) => TextTest::EndsWith(body),
                            (true, true) => TextTest::Contains(body),
                        }
                    }
                    ":" => TextTest::Contains(folded),
                    other => TextTest::Compare(cmp(other), folded),
                };
                Ok(negate(Filter::Text(field, test)))
            }
        }
    }
}

fn cmp(op: &str) -> Cmp {
    match op {
        "<" => Cmp::Lt,
        "<=" => Cmp::Le,
        ">" => Cmp::Gt,
        _ => Cmp::Ge,
    }
}

/// A time as a filter gives it: Unix seconds, or an RFC 3339 timestamp
/// (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`) in whole seconds.
pub fn parse_time(value: &str) -> Result<i64, String> {
    if let Ok(seconds) = value.parse::<i64>() {
        return Ok(seconds);
    }
    rfc3339(value).ok_or_else(|| {
        format!(
            "{value:?} is not a time: expected Unix seconds or RFC 3339 in whole seconds, such as \"2024-05-01T12:00:00Z\""
        )
    })
}

fn rfc3339(value: &str) -> Option<i64> {
    let bytes = value.as_bytes();
    if bytes.len() < 20 || !value.is_ascii() {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &value[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let separators = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let offset = match &value[19..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && zone.as_bytes()[3] == b':' =>
        {
            let minutes = number(20..22)? * 60 + number(23..25)?;
            if zone.starts_with('-') {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid = (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month[(month - 1) as usize]
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    Some(
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
            - offset * 60,
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(field: TextField, test: TextTest) -> Filter {
        Filter::Text(field, test)
    }

    #[test]
    fn or_binds_tighter_than_and() {
        let parsed = parse("role = EDITOR AND name:\"ada\" OR email = \"*@example.com\"")
            .unwrap()
            .unwrap();
        assert_eq!(
            parsed,
            Filter::And(vec![
                Filter::Role(Role::Editor),
                Filter::Or(vec![
                    text(TextField::Name, TextTest::Contains("ada".into())),
                    text(TextField::Email, TextTest::EndsWith("@example.com".into())),
                ]),
            ])
        );
    }

    #[test]
    fn every_operator_and_negation_reads() {
        let cases = [
            (
                "name = \"Ada*\"",
                text(TextField::Name, TextTest::StartsWith("ada".into())),
            ),
            (
                "name = \"*Ada*\"",
                text(TextField::Name, TextTest::Contains("ada".into())),
            ),
            (
                "name != Ada",
                Filter::Not(Box::new(text(
                    TextField::Name,
                    TextTest::Equals("ada".into()),
                ))),
            ),
            (
                "name >= m",
                text(TextField::Name, TextTest::Compare(Cmp::Ge, "m".into())),
            ),
            ("labels:team", Filter::HasLabel("team".into())),
            (
                "labels.k8s.io/app = Web",
                text(
                    TextField::Label("k8s.io/app".into()),
                    TextTest::Equals("web".into()),
                ),
            ),
            ("role = USER_ROLE_ADMIN", Filter::Role(Role::Admin)),
            (
                "created_at > \"2024-01-01T00:00:00Z\"",
                Filter::Time(TimeField::CreatedAt, Cmp::Gt, 1_704_067_200),
            ),
            (
                "updated_at <= 1704067200",
                Filter::Time(TimeField::UpdatedAt, Cmp::Le, 1_704_067_200),
            ),
            (
                "created_at = \"2024-01-01T02:00:00+02:00\"",
                Filter::TimeEquals(TimeField::CreatedAt, 1_704_067_200),
            ),
            (
                "-bio:x",
                Filter::Not(Box::new(text(
                    TextField::Bio,
                    TextTest::Contains("x".into()),
                ))),
            ),
            (
                "NOT (role = viewer)",
                Filter::Not(Box::new(Filter::Role(Role::Viewer))),
            ),
            (
                "name = a name = b",
                Filter::And(vec![
                    text(TextField::Name, TextTest::Equals("a".into())),
                    text(TextField::Name, TextTest::Equals("b".into())),
                ]),
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(parse(filter).unwrap(), Some(expected), "{filter}");
        }
        assert_eq!(parse("  ").unwrap(), None);
    }

    #[test]
    fn an_error_names_its_position_and_what_was_expected() {
        let cases = [
            ("name", 5, "expected an operator"),
            ("name =", 7, "expected a value after ="),
            ("nmae = x", 1, "unknown field \"nmae\""),
            ("(role = admin", 14, "expected ')'"),
            ("role = admin)", 13, "a ')' with no '('"),
            ("role < admin", 8, "role takes = or !="),
            ("created_at > \"yesterday\"", 14, "is not a time"),
            ("name = \"open", 8, "no closing"),
            ("name ! x", 6, "expected !="),
            ("name = \"a\u{0}z\"", 10, "control characters"),
            ("labels = x", 10, "labels takes ':'"),
            ("role = boss", 8, "unknown role"),
            ("name = a AND", 13, "found the end of the filter"),
        ];
        for (filter, position, message) in cases {
            let error = parse(filter).unwrap_err();
            assert_eq!(error.position, position, "{filter}: {error}");
            assert!(error.message.contains(message), "{filter}: {error}");
        }
    }

    #[test]
    fn limits_hold() {
        let many = vec!["name = a"; MAX_COMPARISONS + 1].join(" OR ");
        assert!(
            parse(&many)
                .unwrap_err()
                .message
                .contains("at most 64 comparisons")
        );
        let deep = format!("{}name = a{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().message.contains("32 deep"));
        let nots = format!("{}name = a", "NOT ".repeat(40));
        assert!(parse(&nots).unwrap_err().message.contains("32 deep"));
        let long = format!("name = \"{}\"", "a".repeat(MAX_FILTER_BYTES));
        assert!(parse(&long).unwrap_err().message.contains("2048 bytes"));
    }

    #[test]
    fn rfc3339_is_read_with_its_offset() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2000-02-29T23:59:59Z"), Ok(951_868_799));
        assert_eq!(parse_time("1969-12-31T19:00:00-05:00"), Ok(0));
        assert!(parse_time("2023-02-29T00:00:00Z").is_err());
        assert!(parse_time("2024-01-01T00:00:00.5Z").is_err());
        assert!(parse_time("2024-01-01").is_err());
    }
}
