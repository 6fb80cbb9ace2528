//! Validation of requests (and simulator responses) against a vendor's OpenAPI 3.0 description.
//!
//! Connector tests copy the vendor spec files they need into their own `tests/` folder and check
//! every request the connector sent to a [`Simulator`](crate::sim::Simulator):
//!
//! ```no_run
//! # fn demo(sim: &refsync_testkit::sim::Simulator) -> Result<(), Box<dyn std::error::Error>> {
//! use refsync_testkit::openapi::OpenApi;
//! let spec = OpenApi::load("tests/specs/openapi-v1.yaml")?;
//! for req in sim.requests() {
//!     spec.validate_recorded(&req).map_err(|errors| errors.join("\n"))?;
//! }
//! # Ok(()) }
//! ```
//!
//! The validator implements the subset of JSON Schema that OpenAPI 3.0 descriptions use:
//! `type` (with `nullable`), `properties`, `required` (honouring `readOnly` / `writeOnly`),
//! `additionalProperties`, `items`, `enum`, `allOf` / `anyOf` / `oneOf` / `not`, `$ref` (local
//! and to sibling files, including absolute URLs whose file name is a sibling), `minimum` /
//! `maximum` (with boolean or numeric `exclusiveMinimum` / `exclusiveMaximum`), `minLength` /
//! `maxLength`, `minItems` / `maxItems`, `minProperties` / `maxProperties`. `format`, `pattern`,
//! `multipleOf`, `uniqueItems` and `discriminator` are ignored.
//!
//! Two deliberate leniencies, because real vendor descriptions rely on them:
//! - `oneOf` is checked like `anyOf` (vendors routinely list overlapping alternatives); turn
//!   exact-one checking on with [`OpenApi::with_strict_one_of`].
//! - a `$ref` into a file that is not available (e.g. Zoho's `users.json` when only
//!   `record.json` and `common.json` were copied) accepts any value; such references are listed
//!   by [`OpenApi::unresolved_refs`]. A reference to a missing location inside an available file
//!   is a validation error.
//!
//! Validation never panics, whatever the spec or the body; `$ref` cycles are cut by a depth limit.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::sim::{RecordedRequest, SimResponse, parse_urlencoded, percent_decode};

/// Deepest schema nesting (counting `$ref` hops and combinators) the validator follows.
const MAX_DEPTH: usize = 96;
/// Longest `$ref` -> `$ref` chain followed for parameters, bodies and responses.
const MAX_REF_HOPS: usize = 32;
/// Most errors reported for one validation.
const MAX_ERRORS: usize = 50;
/// Most documents (main + siblings) loaded for one description.
const MAX_DOCUMENTS: usize = 64;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// An OpenAPI description could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    message: String,
}

impl SpecError {
    fn new(message: impl Into<String>) -> Self {
        SpecError {
            message: message.into(),
        }
    }

    /// The human-readable reason.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

#[derive(Debug)]
struct Document {
    /// The key other documents use to reference it: its file name.
    name: String,
    root: Value,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Pattern(Vec<Part>),
}

/// Captured `(name, raw value)` path parameters.
type Captures = Vec<(String, String)>;

#[derive(Debug, Clone)]
struct Route {
    template: String,
    segments: Vec<Segment>,
}

impl Route {
    fn parse(template: &str) -> Route {
        let segments = split_path(template)
            .into_iter()
            .map(|segment| {
                if !segment.contains('{') {
                    return Segment::Literal(segment.to_owned());
                }
                let mut parts = Vec::new();
                let mut rest = segment;
                while let Some(open) = rest.find('{') {
                    if open > 0 {
                        parts.push(Part::Literal(rest[..open].to_owned()));
                    }
                    let after = &rest[open + 1..];
                    match after.find('}') {
                        Some(close) => {
                            parts.push(Part::Param(after[..close].to_owned()));
                            rest = &after[close + 1..];
                        }
                        None => {
                            parts.push(Part::Literal(rest[open..].to_owned()));
                            rest = "";
                        }
                    }
                }
                if !rest.is_empty() {
                    parts.push(Part::Literal(rest.to_owned()));
                }
                Segment::Pattern(parts)
            })
            .collect();
        Route {
            template: template.to_owned(),
            segments,
        }
    }

    /// Matches a concrete path; returns the captured (raw) path parameters and a specificity
    /// score (higher = more literal, compared segment by segment).
    fn matches(&self, segments: &[&str]) -> Option<(Captures, Vec<u8>)> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut captures = Vec::new();
        let mut score = Vec::with_capacity(segments.len());
        for (template, actual) in self.segments.iter().zip(segments) {
            match template {
                Segment::Literal(lit) => {
                    if lit != actual {
                        return None;
                    }
                    score.push(2);
                }
                Segment::Pattern(parts) => {
                    let mut found = Vec::new();
                    if !match_parts(parts, actual, &mut found) {
                        return None;
                    }
                    let has_literal = parts.iter().any(|p| matches!(p, Part::Literal(_)));
                    score.push(u8::from(has_literal));
                    captures.extend(found);
                }
            }
        }
        Some((captures, score))
    }
}

fn match_parts(parts: &[Part], input: &str, captures: &mut Vec<(String, String)>) -> bool {
    match parts.split_first() {
        None => input.is_empty(),
        Some((Part::Literal(lit), rest)) => input
            .strip_prefix(lit.as_str())
            .is_some_and(|remaining| match_parts(rest, remaining, captures)),
        Some((Part::Param(name), rest)) => {
            if rest.is_empty() {
                if input.is_empty() {
                    return false;
                }
                captures.push((name.clone(), input.to_owned()));
                return true;
            }
            for (index, _) in input.char_indices().skip(1) {
                let mark = captures.len();
                captures.push((name.clone(), input[..index].to_owned()));
                if match_parts(rest, &input[index..], captures) {
                    return true;
                }
                captures.truncate(mark);
            }
            false
        }
    }
}

/// Splits a path into its non-empty segments.
fn split_path(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Which side of the exchange a schema is checked for (`readOnly` / `writeOnly` handling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// Where a `$ref` leads.
enum Target<'a> {
    Found(usize, &'a Value),
    /// The referenced file is not available: anything goes.
    MissingDocument,
    /// The file is there but the location is not.
    Missing,
}

struct Validator<'a> {
    api: &'a OpenApi,
    direction: Direction,
    /// Values arrive as strings (path, query, header, form): parse them per the schema type.
    coerce: bool,
}

/// A matched operation.
struct Matched<'a> {
    doc: usize,
    template: &'a str,
    path_item: &'a Value,
    operation: &'a Value,
    params: Vec<(String, String)>,
}

/// A loaded OpenAPI 3.0 description with its sibling files, ready to validate requests and
/// responses. See the [module documentation](self).
pub struct OpenApi {
    source: String,
    docs: Vec<Document>,
    doc_index: HashMap<String, usize>,
    base_paths: Vec<String>,
    routes: Vec<Route>,
    unresolved: Vec<String>,
    strict_one_of: bool,
    lenient_nulls: bool,
}

impl fmt::Debug for OpenApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenApi")
            .field("source", &self.source)
            .field(
                "documents",
                &self
                    .docs
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("base_paths", &self.base_paths)
            .field("paths", &self.routes.len())
            .field("unresolved_refs", &self.unresolved.len())
            .field("strict_one_of", &self.strict_one_of)
            .field("lenient_nulls", &self.lenient_nulls)
            .finish()
    }
}

impl OpenApi {
    /// Loads a description from a `.json`, `.yaml` or `.yml` file; files it references
    /// (`common.json#/components/...`, or an absolute URL ending in a sibling's file name) are
    /// loaded from the same folder when present.
    pub fn load(path: impl AsRef<Path>) -> Result<OpenApi, SpecError> {
        let path = path.as_ref();
        let root = read_document(path)?;
        let name = file_key(&path.to_string_lossy());
        let base_dir = path.parent().map(Path::to_path_buf);
        Self::build(path.display().to_string(), name, root, base_dir.as_deref())
    }

    /// Parses a description from text (JSON or YAML); sibling files are looked up in `base_dir`
    /// when given.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, base_dir: Option<&Path>) -> Result<OpenApi, SpecError> {
        let root = parse_text(text, None).map_err(|e| SpecError::new(format!("<text>: {e}")))?;
        Self::build("<text>".to_owned(), String::new(), root, base_dir)
    }

    fn build(
        source: String,
        name: String,
        root: Value,
        base_dir: Option<&Path>,
    ) -> Result<OpenApi, SpecError> {
        if root.get("swagger").is_some() {
            return Err(SpecError::new(format!(
                "{source}: Swagger 2.0 documents are not supported, only OpenAPI 3.x"
            )));
        }
        let Some(paths) = root.get("paths").and_then(Value::as_object) else {
            return Err(SpecError::new(format!(
                "{source}: not an OpenAPI document (no `paths` object)"
            )));
        };
        let routes = paths.keys().map(|t| Route::parse(t)).collect();
        let base_paths = server_base_paths(&root);

        let mut api = OpenApi {
            source,
            docs: vec![Document {
                name: name.clone(),
                root,
            }],
            doc_index: HashMap::new(),
            base_paths,
            routes,
            unresolved: Vec::new(),
            strict_one_of: false,
            lenient_nulls: false,
        };
        if !name.is_empty() {
            api.doc_index.insert(name, 0);
        }
        api.load_siblings(base_dir)?;
        api.unresolved = api.find_unresolved();
        Ok(api)
    }

    fn load_siblings(&mut self, base_dir: Option<&Path>) -> Result<(), SpecError> {
        let mut missing = BTreeSet::new();
        let mut queue = VecDeque::from([0usize]);
        while let Some(doc) = queue.pop_front() {
            let mut refs = Vec::new();
            collect_refs(&self.docs[doc].root, &mut refs, 0);
            for reference in refs {
                let file = reference.split('#').next().unwrap_or("");
                if file.is_empty() {
                    continue;
                }
                let key = file_key(file);
                if key.is_empty() || self.doc_index.contains_key(&key) || missing.contains(&key) {
                    continue;
                }
                let Some(dir) = base_dir else {
                    missing.insert(key);
                    continue;
                };
                let mut candidates: Vec<PathBuf> = Vec::new();
                if !file.contains("://") && !Path::new(file).is_absolute() {
                    candidates.push(dir.join(file));
                }
                candidates.push(dir.join(&key));
                let Some(found) = candidates.into_iter().find(|p| p.is_file()) else {
                    missing.insert(key);
                    continue;
                };
                if self.docs.len() >= MAX_DOCUMENTS {
                    return Err(SpecError::new(format!(
                        "{}: more than {MAX_DOCUMENTS} referenced documents",
                        self.source
                    )));
                }
                let root = read_document(&found)?;
                self.doc_index.insert(key.clone(), self.docs.len());
                queue.push_back(self.docs.len());
                self.docs.push(Document { name: key, root });
            }
        }
        Ok(())
    }

    fn find_unresolved(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for (index, doc) in self.docs.iter().enumerate() {
            let mut refs = Vec::new();
            collect_refs(&doc.root, &mut refs, 0);
            for reference in refs {
                if !matches!(self.resolve(index, &reference), Target::Found(..)) {
                    let origin = if doc.name.is_empty() {
                        self.source.as_str()
                    } else {
                        doc.name.as_str()
                    };
                    out.insert(format!("{origin}: {reference}"));
                }
            }
        }
        out.into_iter().collect()
    }

    /// Checks `oneOf` strictly (exactly one alternative must match) instead of like `anyOf`.
    #[must_use]
    pub fn with_strict_one_of(mut self, strict: bool) -> Self {
        self.strict_one_of = strict;
        self
    }

    /// Accepts `null` for every value, as if every schema were `nullable` (for payloads copied
    /// from real vendor answers, which often carry nulls the description does not declare).
    #[must_use]
    pub fn with_lenient_nulls(mut self, lenient: bool) -> Self {
        self.lenient_nulls = lenient;
        self
    }

    /// References that could not be resolved, as `"<document>: <$ref>"`. References into a
    /// missing file accept any value; references to a missing location in an available file
    /// fail validation.
    pub fn unresolved_refs(&self) -> Vec<String> {
        self.unresolved.clone()
    }

    /// The base paths taken from `servers[].url` (e.g. `/v1`), stripped from request paths.
    pub fn base_paths(&self) -> Vec<String> {
        self.base_paths.clone()
    }

    /// Every operation as `(METHOD, path template)`, sorted by template then method.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(paths) = self.docs[0].root.get("paths").and_then(Value::as_object) {
            for (template, item) in paths {
                let Ok((_, item)) = self.deref(0, item) else {
                    continue;
                };
                for method in METHODS {
                    if item.get(method).is_some_and(Value::is_object) {
                        out.push((method.to_ascii_uppercase(), template.clone()));
                    }
                }
            }
        }
        out
    }

    /// The path template of the operation `method path` resolves to, if any.
    pub fn operation_for(&self, method: &str, path: &str) -> Option<String> {
        self.find_operation(method, path)
            .ok()
            .map(|m| m.template.to_owned())
    }

    /// Validates a request: finds the operation whose path template matches `path` (the
    /// servers' base path, e.g. `/v1`, may be included or not), checks the required query
    /// parameters are present and path and query parameters fit their schemas, and validates
    /// `body` against the request body schema (`application/json`, else
    /// `application/x-www-form-urlencoded` given as an object of strings).
    pub fn validate_request(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(), Vec<String>> {
        let (path, query) = split_query(path, query);
        let matched = self.find_operation(method, path).map_err(|e| vec![e])?;
        let prefix = format!("{} {}", method.to_ascii_uppercase(), path);
        let mut errors = Vec::new();
        self.check_parameters(&matched, query, None, &mut errors);
        self.check_body(&matched, BodyInput::Value(body), &mut errors);
        finish(&prefix, errors)
    }

    /// Validates a request a [`Simulator`](crate::sim::Simulator) recorded: like
    /// [`validate_request`](Self::validate_request), plus required header parameters, and the
    /// body is decoded per its `Content-Type` (JSON or form) and must be a content type the
    /// operation accepts.
    pub fn validate_recorded(&self, req: &RecordedRequest) -> Result<(), Vec<String>> {
        let matched = self
            .find_operation(&req.method, &req.path)
            .map_err(|e| vec![e])?;
        let prefix = format!("{} {}", req.method.to_ascii_uppercase(), req.path);
        let mut errors = Vec::new();
        self.check_parameters(
            &matched,
            req.query.as_deref(),
            Some(&req.headers),
            &mut errors,
        );
        self.check_body(
            &matched,
            BodyInput::Raw {
                content_type: req.header("content-type"),
                body: &req.body,
            },
            &mut errors,
        );
        finish(&prefix, errors)
    }

    /// Validates every request in `requests` whose path starts with `prefix` against the
    /// description among `specs` that has its operation, after `rewrite` maps its path to the
    /// form the descriptions name (e.g. HubSpot's `/crm/v3/objects/deals` → `/0-3`). `tolerate`
    /// drops a documented gap of a description (request, error) — keep it narrow. Returns how
    /// many requests were checked, or every problem found (a request no description has is one).
    pub fn check_requests<'r>(
        specs: &[OpenApi],
        requests: impl IntoIterator<Item = &'r RecordedRequest>,
        prefix: &str,
        rewrite: impl Fn(&str) -> String,
        tolerate: impl Fn(&RecordedRequest, &str) -> bool,
    ) -> Result<usize, Vec<String>> {
        let mut checked = 0;
        let mut problems = Vec::new();
        for req in requests {
            if !req.path.starts_with(prefix) {
                continue;
            }
            let mut req = req.clone();
            req.path = rewrite(&req.path);
            checked += 1;
            let Some(spec) = specs
                .iter()
                .find(|s| s.operation_for(&req.method, &req.path).is_some())
            else {
                problems.push(format!("no description has {} {}", req.method, req.path));
                continue;
            };
            if let Err(errors) = spec.validate_recorded(&req) {
                problems.extend(errors.into_iter().filter(|e| !tolerate(&req, e)));
            }
        }
        if problems.is_empty() {
            Ok(checked)
        } else {
            Err(problems)
        }
    }

    /// Validates a response body against the schema the operation declares for `status`
    /// (exact code, else `2XX`-style range, else `default`). Pass `Value::Null` for no body.
    pub fn validate_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), Vec<String>> {
        let (path, _) = split_query(path, None);
        let matched = self.find_operation(method, path).map_err(|e| vec![e])?;
        let prefix = format!(
            "{} {}: response {status}",
            method.to_ascii_uppercase(),
            path
        );
        let mut errors = Vec::new();
        self.check_response(&matched, status, body, &mut errors);
        finish(&prefix, errors)
    }

    /// Validates what a simulator handler answered to `req` (the body parsed as JSON; empty =
    /// no body).
    pub fn validate_sim_response(
        &self,
        req: &RecordedRequest,
        response: &SimResponse,
    ) -> Result<(), Vec<String>> {
        let body = if response.body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(&response.body) {
                Ok(v) => v,
                Err(e) => {
                    return Err(vec![format!(
                        "{} {}: response {}: body is not JSON: {e}",
                        req.method, req.path, response.status
                    )]);
                }
            }
        };
        self.validate_response(&req.method, &req.path, response.status, &body)
    }

    // ----- operation lookup -------------------------------------------------------------------

    fn find_operation<'a>(&'a self, method: &str, path: &str) -> Result<Matched<'a>, String> {
        let method_lower = method.to_ascii_lowercase();
        let not_found = || {
            format!(
                "no operation matches {} {}",
                method.to_ascii_uppercase(),
                path
            )
        };
        let Some(paths) = self.docs[0].root.get("paths").and_then(Value::as_object) else {
            return Err(not_found());
        };
        // Candidate paths: with each server base path stripped, then as given.
        let mut candidates: Vec<&str> = Vec::new();
        for base in &self.base_paths {
            if let Some(rest) = path.strip_prefix(base.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    candidates.push(rest);
                }
            }
        }
        candidates.push(path);

        let mut wrong_method: Option<(String, Vec<String>)> = None;
        for candidate in candidates {
            let segments = split_path(candidate);
            let mut best: Option<(Vec<u8>, Matched<'a>)> = None;
            for route in &self.routes {
                let Some((captures, score)) = route.matches(&segments) else {
                    continue;
                };
                let Some(item) = paths.get(&route.template) else {
                    continue;
                };
                let Ok((doc, item)) = self.deref(0, item) else {
                    continue;
                };
                let Some(operation) = item.get(&method_lower).filter(|o| o.is_object()) else {
                    if wrong_method.is_none() {
                        let allowed = METHODS
                            .iter()
                            .filter(|m| item.get(**m).is_some_and(Value::is_object))
                            .map(|m| m.to_ascii_uppercase())
                            .collect();
                        wrong_method = Some((route.template.clone(), allowed));
                    }
                    continue;
                };
                if best.as_ref().is_none_or(|(s, _)| score > *s) {
                    let matched = Matched {
                        doc,
                        template: &route.template,
                        path_item: item,
                        operation,
                        params: captures,
                    };
                    best = Some((score, matched));
                }
            }
            if let Some((_, matched)) = best {
                return Ok(matched);
            }
        }
        match wrong_method {
            Some((template, allowed)) => Err(format!(
                "{} (path template {template} allows {})",
                not_found(),
                if allowed.is_empty() {
                    "no method".to_owned()
                } else {
                    allowed.join(", ")
                }
            )),
            None => Err(not_found()),
        }
    }

    // ----- parameters -------------------------------------------------------------------------

    /// Path-item parameters overridden by operation parameters, keyed by (in, name).
    fn parameters<'a>(
        &'a self,
        matched: &Matched<'a>,
        errors: &mut Vec<String>,
    ) -> Vec<(usize, &'a Value)> {
        let mut by_key: BTreeMap<(String, String), (usize, &'a Value)> = BTreeMap::new();
        let mut order = Vec::new();
        for list in [
            matched.path_item.get("parameters"),
            matched.operation.get("parameters"),
        ]
        .into_iter()
        .flatten()
        {
            let Some(list) = list.as_array() else {
                continue;
            };
            for param in list {
                match self.deref(matched.doc, param) {
                    Ok((doc, param)) => {
                        let name = param.get("name").and_then(Value::as_str).unwrap_or("");
                        let location = param.get("in").and_then(Value::as_str).unwrap_or("");
                        let key = (location.to_owned(), name.to_owned());
                        if !by_key.contains_key(&key) {
                            order.push(key.clone());
                        }
                        by_key.insert(key, (doc, param));
                    }
                    Err(e) => errors.push(format!("parameter: {e}")),
                }
            }
        }
        order
            .into_iter()
            .filter_map(|key| by_key.get(&key).copied())
            .collect()
    }

    fn check_parameters(
        &self,
        matched: &Matched<'_>,
        query: Option<&str>,
        headers: Option<&[(String, String)]>,
        errors: &mut Vec<String>,
    ) {
        let query_pairs = query.map(parse_urlencoded).unwrap_or_default();
        let validator = Validator {
            api: self,
            direction: Direction::Request,
            coerce: true,
        };
        for (doc, param) in self.parameters(matched, errors) {
            let name = param.get("name").and_then(Value::as_str).unwrap_or("");
            let location = param.get("in").and_then(Value::as_str).unwrap_or("");
            let required = param.get("required").and_then(Value::as_bool) == Some(true);
            let schema = param.get("schema");
            let (label, values): (&str, Vec<String>) = match location {
                "path" => (
                    "path parameter",
                    matched
                        .params
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, v)| percent_decode(v, false))
                        .collect(),
                ),
                "query" => {
                    let bracketed = format!("{name}[]");
                    (
                        "query parameter",
                        query_pairs
                            .iter()
                            .filter(|(n, _)| n == name || *n == bracketed)
                            .map(|(_, v)| v.clone())
                            .collect(),
                    )
                }
                "header" => {
                    let Some(headers) = headers else { continue };
                    if ["accept", "content-type", "authorization"]
                        .iter()
                        .any(|h| name.eq_ignore_ascii_case(h))
                    {
                        continue;
                    }
                    (
                        "header",
                        headers
                            .iter()
                            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.clone())
                            .collect(),
                    )
                }
                _ => continue,
            };
            if values.is_empty() {
                if required && location != "path" {
                    errors.push(format!("missing required {label} `{name}`"));
                }
                continue;
            }
            let Some(schema) = schema else { continue };
            let wants_array = validator.schema_type(doc, schema) == Some("array");
            let value = if wants_array {
                Value::Array(values.into_iter().map(Value::String).collect())
            } else {
                Value::String(values.into_iter().next().unwrap_or_default())
            };
            let mut found = Vec::new();
            validator.validate(doc, schema, &value, "", 0, &mut found);
            errors.extend(found.into_iter().map(|e| format!("{label} `{name}`: {e}")));
        }
    }

    // ----- bodies -----------------------------------------------------------------------------

    fn check_body(&self, matched: &Matched<'_>, input: BodyInput<'_>, errors: &mut Vec<String>) {
        let request_body = match matched.operation.get("requestBody") {
            None => None,
            Some(rb) => match self.deref(matched.doc, rb) {
                Ok(found) => Some(found),
                Err(e) => {
                    errors.push(format!("body: {e}"));
                    return;
                }
            },
        };
        let present = match &input {
            BodyInput::Value(v) => v.is_some(),
            BodyInput::Raw { body, .. } => !body.iter().all(u8::is_ascii_whitespace),
        };
        let Some((doc, request_body)) = request_body else {
            if present {
                errors.push("body: the operation takes no request body".to_owned());
            }
            return;
        };
        if !present {
            if request_body.get("required").and_then(Value::as_bool) == Some(true) {
                errors.push("body: missing (the request body is required)".to_owned());
            }
            return;
        }
        let Some(content) = request_body.get("content").and_then(Value::as_object) else {
            return;
        };
        let json_media = content.iter().find(|(k, _)| is_json_media(k));
        let form_media = content
            .iter()
            .find(|(k, _)| media_base(k) == "application/x-www-form-urlencoded");

        let (media, value, coerce) = match input {
            BodyInput::Value(value) => {
                let Some(value) = value else { return };
                match (json_media, form_media) {
                    (Some(m), _) => (m.1, Cow::Borrowed(value), false),
                    (None, Some(m)) => (m.1, Cow::Borrowed(value), true),
                    (None, None) => return,
                }
            }
            BodyInput::Raw { content_type, body } => {
                let sent = content_type.map(media_base).unwrap_or_default();
                let declared = |t: &str| {
                    content
                        .keys()
                        .any(|k| media_base(k) == t || k == "*/*" || media_matches_wildcard(k, t))
                };
                let accepted: Vec<&str> = content.keys().map(String::as_str).collect();
                if is_json_media(&sent)
                    || (sent.is_empty() && serde_json::from_slice::<Value>(body).is_ok())
                {
                    let value: Value = match serde_json::from_slice(body) {
                        Ok(v) => v,
                        Err(e) => {
                            errors.push(format!("body: not valid JSON: {e}"));
                            return;
                        }
                    };
                    match json_media {
                        Some(m) => (m.1, Cow::Owned(value), false),
                        None if declared(&sent) => return,
                        None => {
                            errors.push(format!(
                                "body: content type {} is not accepted (accepts {})",
                                if sent.is_empty() { "JSON" } else { &sent },
                                accepted.join(", ")
                            ));
                            return;
                        }
                    }
                } else if sent == "application/x-www-form-urlencoded" {
                    let Some(m) = form_media else {
                        if !declared(&sent) {
                            errors.push(format!(
                                "body: content type {sent} is not accepted (accepts {})",
                                accepted.join(", ")
                            ));
                        }
                        return;
                    };
                    let text = String::from_utf8_lossy(body);
                    (
                        m.1,
                        Cow::Owned(form_to_object(&parse_urlencoded(&text))),
                        true,
                    )
                } else {
                    if !declared(&sent) {
                        errors.push(format!(
                            "body: content type {} is not accepted (accepts {})",
                            if sent.is_empty() { "(none)" } else { &sent },
                            accepted.join(", ")
                        ));
                    }
                    return;
                }
            }
        };
        let Some(schema) = media.get("schema") else {
            return;
        };
        let validator = Validator {
            api: self,
            direction: Direction::Request,
            coerce,
        };
        let mut found = Vec::new();
        validator.validate(doc, schema, &value, "", 0, &mut found);
        errors.extend(found.into_iter().map(|e| format!("body: {e}")));
    }

    fn check_response(
        &self,
        matched: &Matched<'_>,
        status: u16,
        body: &Value,
        errors: &mut Vec<String>,
    ) {
        let Some(responses) = matched
            .operation
            .get("responses")
            .and_then(Value::as_object)
        else {
            errors.push("the operation declares no responses".to_owned());
            return;
        };
        let code = status.to_string();
        let range = format!("{}XX", status / 100);
        let response = responses
            .get(&code)
            .or_else(|| {
                responses
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&range))
                    .map(|(_, v)| v)
            })
            .or_else(|| responses.get("default"));
        let Some(response) = response else {
            let declared: Vec<&str> = responses.keys().map(String::as_str).collect();
            errors.push(format!(
                "status not declared (declared: {})",
                declared.join(", ")
            ));
            return;
        };
        let (doc, response) = match self.deref(matched.doc, response) {
            Ok(found) => found,
            Err(e) => {
                errors.push(e);
                return;
            }
        };
        let content = response.get("content").and_then(Value::as_object);
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            if !body.is_null() {
                errors.push("no response body is declared, but one was given".to_owned());
            }
            return;
        };
        let Some((_, media)) = content
            .iter()
            .find(|(k, _)| is_json_media(k))
            .or_else(|| content.iter().find(|(k, _)| k.as_str() == "*/*"))
        else {
            return;
        };
        let Some(schema) = media.get("schema") else {
            return;
        };
        let validator = Validator {
            api: self,
            direction: Direction::Response,
            coerce: false,
        };
        validator.validate(doc, schema, body, "", 0, errors);
    }

    // ----- references -------------------------------------------------------------------------

    fn resolve(&self, doc: usize, reference: &str) -> Target<'_> {
        let (file, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let target_doc = if file.is_empty() {
            doc
        } else {
            match self.doc_index.get(&file_key(file)) {
                Some(index) => *index,
                None => return Target::MissingDocument,
            }
        };
        let Some(document) = self.docs.get(target_doc) else {
            return Target::MissingDocument;
        };
        let pointer = percent_decode(fragment, false);
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Target::Missing;
        }
        match document.root.pointer(&pointer) {
            Some(value) => Target::Found(target_doc, value),
            None => Target::Missing,
        }
    }

    /// Follows `$ref` chains of non-schema objects (parameters, bodies, responses, path items).
    /// A reference into a missing file yields an empty object.
    fn deref<'a>(&'a self, doc: usize, value: &'a Value) -> Result<(usize, &'a Value), String> {
        static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        let mut current = (doc, value);
        for _ in 0..MAX_REF_HOPS {
            let Some(reference) = current.1.get("$ref").and_then(Value::as_str) else {
                return Ok(current);
            };
            match self.resolve(current.0, reference) {
                Target::Found(d, v) => current = (d, v),
                Target::MissingDocument => {
                    return Ok((current.0, EMPTY.get_or_init(|| Value::Object(Map::new()))));
                }
                Target::Missing => return Err(format!("unresolved $ref {reference}")),
            }
        }
        Err(format!(
            "$ref chain longer than {MAX_REF_HOPS} hops (a cycle?)"
        ))
    }
}

#[derive(Clone, Copy)]
enum BodyInput<'a> {
    Value(Option<&'a Value>),
    Raw {
        content_type: Option<&'a str>,
        body: &'a [u8],
    },
}

fn finish(prefix: &str, errors: Vec<String>) -> Result<(), Vec<String>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors
            .into_iter()
            .map(|e| format!("{prefix}: {e}"))
            .collect())
    }
}

fn split_query<'a>(path: &'a str, query: Option<&'a str>) -> (&'a str, Option<&'a str>) {
    match path.split_once('?') {
        Some((p, q)) => (p, query.or(Some(q))),
        None => (path, query),
    }
}

fn media_base(media: &str) -> String {
    media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media(media: &str) -> bool {
    let base = media_base(media);
    base == "application/json" || base.ends_with("+json") || base.ends_with("/json")
}

fn media_matches_wildcard(declared: &str, sent: &str) -> bool {
    let declared = media_base(declared);
    match declared.strip_suffix("/*") {
        Some(kind) => sent.split('/').next() == Some(kind),
        None => false,
    }
}

/// Form pairs as a JSON object of strings (repeated names, or `name[]`, become arrays).
fn form_to_object(pairs: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (name, value) in pairs {
        let (name, bracketed) = match name.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (name.as_str(), false),
        };
        let value = Value::String(value.clone());
        match map.get_mut(name) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                map.insert(
                    name.to_owned(),
                    if bracketed {
                        Value::Array(vec![value])
                    } else {
                        value
                    },
                );
            }
        }
    }
    Value::Object(map)
}

/// The name a document is referenced by: the last path segment, without query or fragment.
fn file_key(file: &str) -> String {
    let file = file.split(['?', '#']).next().unwrap_or("");
    file.rsplit(['/', '\\']).next().unwrap_or("").to_owned()
}

fn server_base_paths(root: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(servers) = root.get("servers").and_then(Value::as_array) else {
        return out;
    };
    for server in servers {
        let Some(url) = server.get("url").and_then(Value::as_str) else {
            continue;
        };
        let mut url = url.to_owned();
        if let Some(vars) = server.get("variables").and_then(Value::as_object) {
            for (name, var) in vars {
                let default = var.get("default").and_then(Value::as_str).unwrap_or("");
                url = url.replace(&format!("{{{name}}}"), default);
            }
        }
        let path = match url.split_once("://") {
            Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or(""),
            None if url.starts_with('/') => url.as_str(),
            None => "",
        };
        let path = path
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        if !path.is_empty() && !path.contains('{') && !out.iter().any(|p| p == path) {
            out.push(path.to_owned());
        }
    }
    // Longest first, so `/api/v1` is tried before `/api`.
    out.sort_by_key(|p| std::cmp::Reverse(p.len()));
    out
}

fn collect_refs(value: &Value, out: &mut Vec<String>, depth: usize) {
    if depth > 512 {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" {
                    if let Some(r) = child.as_str() {
                        out.push(r.to_owned());
                    }
                } else if key != "example" && key != "examples" {
                    collect_refs(child, out, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for child in items {
                collect_refs(child, out, depth + 1);
            }
        }
        _ => {}
    }
}

fn read_document(path: &Path) -> Result<Value, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(format!("{}: cannot read: {e}", path.display())))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    parse_text(&text, extension.as_deref())
        .map_err(|e| SpecError::new(format!("{}: {e}", path.display())))
}

fn parse_text(text: &str, extension: Option<&str>) -> Result<Value, String> {
    let json_like = match extension {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    if json_like {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        let yaml: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
        Ok(yaml_to_json(yaml, 0))
    }
}

fn yaml_to_json(value: serde_norway::Value, depth: usize) -> Value {
    use serde_norway::Value as Y;
    if depth > 512 {
        return Value::Null;
    }
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|v| yaml_to_json(v, depth + 1))
                .collect(),
        ),
        Y::Mapping(mapping) => {
            let mut map = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    Y::Null => "null".to_owned(),
                    other => serde_norway::to_string(&other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                map.insert(key, yaml_to_json(value, depth + 1));
            }
            Value::Object(map)
        }
        Y::Tagged(tagged) => yaml_to_json(tagged.value, depth + 1),
    }
}

// ----- schema validation ----------------------------------------------------------------------

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        // An unknown type name constrains nothing.
        _ => true,
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn at(pointer: &str, message: impl fmt::Display) -> String {
    if pointer.is_empty() {
        message.to_string()
    } else {
        format!("{pointer}: {message}")
    }
}

fn parse_scalar(text: &str, ty: &str) -> Option<Value> {
    let text = text.trim();
    match ty {
        "integer" => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .ok(),
        "number" => {
            if let Ok(i) = text.parse::<i64>() {
                return Some(Value::from(i));
            }
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
        }
        "boolean" => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

impl Validator<'_> {
    /// The `type` of a schema, following `$ref`s.
    fn schema_type<'s>(&'s self, doc: usize, schema: &'s Value) -> Option<&'s str> {
        let mut current = (doc, schema);
        for _ in 0..MAX_REF_HOPS {
            if let Some(ty) = current.1.get("type").and_then(Value::as_str) {
                return Some(ty);
            }
            let reference = current.1.get("$ref").and_then(Value::as_str)?;
            match self.api.resolve(current.0, reference) {
                Target::Found(d, v) => current = (d, v),
                _ => return None,
            }
        }
        None
    }

    /// Whether the property schema is marked `readOnly` (`writeOnly`) — one `$ref` deep.
    fn has_flag(&self, doc: usize, schema: &Value, flag: &str) -> bool {
        let mut current = (doc, schema);
        for _ in 0..MAX_REF_HOPS {
            if current.1.get(flag).and_then(Value::as_bool) == Some(true) {
                return true;
            }
            let Some(reference) = current.1.get("$ref").and_then(Value::as_str) else {
                return false;
            };
            match self.api.resolve(current.0, reference) {
                Target::Found(d, v) => current = (d, v),
                _ => return false,
            }
        }
        false
    }

    fn validate(
        &self,
        doc: usize,
        schema: &Value,
        value: &Value,
        pointer: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        if out.len() >= MAX_ERRORS {
            return;
        }
        if depth > MAX_DEPTH {
            out.push(at(
                pointer,
                "schema nesting too deep (a $ref cycle?): not validated further",
            ));
            return;
        }
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(at(pointer, "no value is allowed here"));
                return;
            }
            Value::Object(map) => map,
            _ => return,
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            // OpenAPI 3.0: siblings of `$ref` are ignored.
            match self.api.resolve(doc, reference) {
                Target::Found(d, target) => {
                    self.validate(d, target, value, pointer, depth + 1, out);
                }
                Target::MissingDocument => {}
                Target::Missing => out.push(at(pointer, format!("unresolved $ref {reference}"))),
            }
            return;
        }

        let declared_type = schema.get("type");
        let single_type = declared_type.and_then(Value::as_str);

        // String-borne values (parameters, form fields) are parsed per the declared type.
        let value: Cow<'_, Value> = match (self.coerce, value, single_type) {
            (true, Value::String(s), Some(ty @ ("integer" | "number" | "boolean"))) => {
                match parse_scalar(s, ty) {
                    Some(parsed) => Cow::Owned(parsed),
                    None => {
                        out.push(at(
                            pointer,
                            format!("expected {ty}, got string {}", short(value)),
                        ));
                        return;
                    }
                }
            }
            (true, Value::String(_), Some("array")) => {
                Cow::Owned(Value::Array(vec![value.clone()]))
            }
            _ => Cow::Borrowed(value),
        };
        let value = value.as_ref();

        if value.is_null()
            && (self.api.lenient_nulls
                || schema.get("nullable").and_then(Value::as_bool) == Some(true))
        {
            return;
        }

        // `type` as a string (OpenAPI 3.0) or a list of names (3.1 style).
        let expected: Vec<&str> = match declared_type {
            Some(Value::String(ty)) => vec![ty.as_str()],
            Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !expected.is_empty() && !expected.iter().any(|ty| is_type(value, ty)) {
            out.push(at(
                pointer,
                format!(
                    "expected {}, got {}",
                    expected.join(" or "),
                    type_name(value)
                ),
            ));
            return;
        }

        let enum_options = schema.get("enum").and_then(Value::as_array);
        if let Some(options) = enum_options.filter(|o| !o.iter().any(|o| values_equal(o, value))) {
            let listed: Vec<String> = options.iter().take(10).map(short).collect();
            let more = if options.len() > 10 { ", ..." } else { "" };
            out.push(at(
                pointer,
                format!(
                    "{} is not one of [{}{more}]",
                    short(value),
                    listed.join(", ")
                ),
            ));
        }

        match value {
            Value::Number(n) => self.check_number(schema, n, pointer, out),
            Value::String(s) => {
                let length = s.chars().count() as u64;
                if let Some(min) = schema
                    .get("minLength")
                    .and_then(Value::as_u64)
                    .filter(|&min| length < min)
                {
                    out.push(at(
                        pointer,
                        format!("string is {length} characters long, minLength is {min}"),
                    ));
                }
                if let Some(max) = schema
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .filter(|&max| length > max)
                {
                    out.push(at(
                        pointer,
                        format!("string is {length} characters long, maxLength is {max}"),
                    ));
                }
            }
            Value::Array(items) => {
                let count = items.len() as u64;
                if let Some(min) = schema
                    .get("minItems")
                    .and_then(Value::as_u64)
                    .filter(|&min| count < min)
                {
                    out.push(at(pointer, format!("{count} items, minItems is {min}")));
                }
                if let Some(max) = schema
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .filter(|&max| count > max)
                {
                    out.push(at(pointer, format!("{count} items, maxItems is {max}")));
                }
                if let Some(item_schema) = schema.get("items") {
                    for (index, item) in items.iter().enumerate() {
                        if out.len() >= MAX_ERRORS {
                            break;
                        }
                        let child = format!("{pointer}/{index}");
                        self.validate(doc, item_schema, item, &child, depth + 1, out);
                    }
                }
            }
            Value::Object(object) => self.check_object(doc, schema, object, pointer, depth, out),
            Value::Null | Value::Bool(_) => {}
        }

        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.validate(doc, sub, value, pointer, depth + 1, out);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            self.check_alternatives(doc, any, "anyOf", false, value, pointer, depth, out);
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            self.check_alternatives(
                doc,
                one,
                "oneOf",
                self.api.strict_one_of,
                value,
                pointer,
                depth,
                out,
            );
        }
        if let Some(not) = schema.get("not") {
            let mut found = Vec::new();
            self.validate(doc, not, value, pointer, depth + 1, &mut found);
            if found.is_empty() {
                out.push(at(pointer, "matches the schema under `not`"));
            }
        }
    }

    fn check_number(
        &self,
        schema: &Map<String, Value>,
        n: &serde_json::Number,
        pointer: &str,
        out: &mut Vec<String>,
    ) {
        let Some(v) = n.as_f64() else { return };
        let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
        let exclusive = |key: &str| schema.get(key).and_then(Value::as_bool) == Some(true);
        if let Some(min) = bound("minimum") {
            if exclusive("exclusiveMinimum") {
                if v <= min {
                    out.push(at(pointer, format!("{n} is not greater than {min}")));
                }
            } else if v < min {
                out.push(at(pointer, format!("{n} is less than the minimum {min}")));
            }
        }
        if let Some(max) = bound("maximum") {
            if exclusive("exclusiveMaximum") {
                if v >= max {
                    out.push(at(pointer, format!("{n} is not less than {max}")));
                }
            } else if v > max {
                out.push(at(
                    pointer,
                    format!("{n} is greater than the maximum {max}"),
                ));
            }
        }
        // JSON Schema / OpenAPI 3.1 style numeric exclusive bounds.
        if let Some(min) = bound("exclusiveMinimum").filter(|&min| v <= min) {
            out.push(at(pointer, format!("{n} is not greater than {min}")));
        }
        if let Some(max) = bound("exclusiveMaximum").filter(|&max| v >= max) {
            out.push(at(pointer, format!("{n} is not less than {max}")));
        }
    }

    fn check_object(
        &self,
        doc: usize,
        schema: &Map<String, Value>,
        object: &Map<String, Value>,
        pointer: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if object.contains_key(name) {
                    continue;
                }
                let skip_flag = match self.direction {
                    Direction::Request => "readOnly",
                    Direction::Response => "writeOnly",
                };
                let skipped = properties
                    .and_then(|p| p.get(name))
                    .is_some_and(|p| self.has_flag(doc, p, skip_flag));
                if !skipped {
                    out.push(at(pointer, format!("missing required property `{name}`")));
                }
            }
        }
        let count = object.len() as u64;
        if let Some(min) = schema
            .get("minProperties")
            .and_then(Value::as_u64)
            .filter(|&min| count < min)
        {
            out.push(at(
                pointer,
                format!("{count} properties, minProperties is {min}"),
            ));
        }
        if let Some(max) = schema
            .get("maxProperties")
            .and_then(Value::as_u64)
            .filter(|&max| count > max)
        {
            out.push(at(
                pointer,
                format!("{count} properties, maxProperties is {max}"),
            ));
        }
        let additional = schema.get("additionalProperties");
        for (key, child_value) in object {
            if out.len() >= MAX_ERRORS {
                return;
            }
            let child = format!("{pointer}/{}", escape_pointer(key));
            if let Some(property) = properties.and_then(|p| p.get(key)) {
                self.validate(doc, property, child_value, &child, depth + 1, out);
                continue;
            }
            match additional {
                Some(Value::Bool(false)) => out.push(at(
                    pointer,
                    format!("unknown property `{key}` (additionalProperties is false)"),
                )),
                Some(extra @ Value::Object(_)) => {
                    self.validate(doc, extra, child_value, &child, depth + 1, out);
                }
                _ => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_alternatives(
        &self,
        doc: usize,
        alternatives: &[Value],
        keyword: &str,
        exactly_one: bool,
        value: &Value,
        pointer: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        if alternatives.is_empty() {
            return;
        }
        let mut matching = 0;
        let mut reasons = Vec::new();
        for (index, alternative) in alternatives.iter().enumerate() {
            let mut found = Vec::new();
            self.validate(doc, alternative, value, pointer, depth + 1, &mut found);
            if found.is_empty() {
                matching += 1;
                if !exactly_one {
                    return;
                }
            } else if reasons.len() < 5 {
                let first = found.into_iter().next().unwrap_or_default();
                reasons.push(format!("#{}: {first}", index + 1));
            }
        }
        if matching == 0 {
            out.push(at(
                pointer,
                format!(
                    "matches none of the {} {keyword} alternatives ({})",
                    alternatives.len(),
                    reasons.join("; ")
                ),
            ));
        } else if exactly_one && matching > 1 {
            out.push(at(
                pointer,
                format!("matches {matching} {keyword} alternatives, expected exactly one"),
            ));
        }
    }
}
