//! Tests of the OpenAPI validator against the vendors' own descriptions (copied unchanged into
//! tests/data/, see tests/data/SOURCE.md).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use refsync_testkit::openapi::OpenApi;
use refsync_testkit::sim::{RecordedRequest, SimResponse, Simulator};
use serde_json::{Value, json};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

fn hubspot() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| OpenApi::load(data("hubspot/contacts.json")).expect("hubspot spec"))
}

fn zoho() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| OpenApi::load(data("zoho/record.json")).expect("zoho spec"))
}

fn pipedrive() -> &'static OpenApi {
    static SPEC: OnceLock<OpenApi> = OnceLock::new();
    SPEC.get_or_init(|| OpenApi::load(data("pipedrive/openapi-v1.yaml")).expect("pipedrive spec"))
}

const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";

fn upsert_body() -> Value {
    json!({
        "inputs": [{
            "idProperty": "email",
            "id": "a@b.c",
            "properties": {
                "email": "a@b.c",
                "firstname": "Ann",
                "referral_code": "R-123"
            }
        }]
    })
}

fn errors_of(result: Result<(), Vec<String>>) -> Vec<String> {
    result.expect_err("validation should fail")
}

// ----- HubSpot -----------------------------------------------------------------------------------

#[test]
fn hubspot_batch_upsert_request_validates() {
    hubspot()
        .validate_request("POST", UPSERT, None, Some(&upsert_body()))
        .unwrap();
    // Method case does not matter; a trailing slash neither.
    hubspot()
        .validate_request("post", &format!("{UPSERT}/"), None, Some(&upsert_body()))
        .unwrap();
}

#[test]
fn hubspot_missing_required_field_is_named() {
    let mut body = upsert_body();
    body["inputs"][0]
        .as_object_mut()
        .unwrap()
        .remove("properties");
    let errors = errors_of(hubspot().validate_request("POST", UPSERT, None, Some(&body)));
    assert_eq!(
        errors,
        vec![format!(
            "POST {UPSERT}: body: /inputs/0: missing required property `properties`"
        )]
    );

    let errors = errors_of(hubspot().validate_request("POST", UPSERT, None, Some(&json!({}))));
    assert_eq!(
        errors,
        vec![format!(
            "POST {UPSERT}: body: missing required property `inputs`"
        )]
    );
}

#[test]
fn hubspot_wrong_types_are_reported_with_their_location() {
    let mut body = upsert_body();
    body["inputs"][0]["properties"]["age"] = json!(42);
    body["inputs"][0]["id"] = json!(["a@b.c"]);
    let errors = errors_of(hubspot().validate_request("POST", UPSERT, None, Some(&body)));
    assert_eq!(
        errors,
        vec![
            format!("POST {UPSERT}: body: /inputs/0/id: expected string, got array"),
            format!("POST {UPSERT}: body: /inputs/0/properties/age: expected string, got integer"),
        ]
    );

    let errors = errors_of(hubspot().validate_request(
        "POST",
        UPSERT,
        None,
        Some(&json!({"inputs": {"id": "x"}})),
    ));
    assert_eq!(
        errors,
        vec![format!(
            "POST {UPSERT}: body: /inputs: expected array, got object"
        )]
    );
}

#[test]
fn missing_and_unexpected_bodies() {
    let errors = errors_of(hubspot().validate_request("POST", UPSERT, None, None));
    assert_eq!(
        errors,
        vec![format!(
            "POST {UPSERT}: body: missing (the request body is required)"
        )]
    );
    let errors = errors_of(hubspot().validate_request(
        "GET",
        "/crm/v3/objects/contacts/123",
        None,
        Some(&json!({})),
    ));
    assert_eq!(
        errors,
        vec!["GET /crm/v3/objects/contacts/123: body: the operation takes no request body"]
    );
}

#[test]
fn unknown_paths_and_methods_fail() {
    let errors = errors_of(hubspot().validate_request("GET", "/crm/v3/nope", None, None));
    assert_eq!(errors, vec!["no operation matches GET /crm/v3/nope"]);

    let errors = errors_of(pipedrive().validate_request("GET", "/v1/nope", None, None));
    assert_eq!(errors, vec!["no operation matches GET /v1/nope"]);

    let errors = errors_of(hubspot().validate_request("PUT", UPSERT, None, None));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(&format!("no operation matches PUT {UPSERT}")),
        "{errors:?}"
    );
    assert!(errors[0].contains("allows POST"), "{errors:?}");
}

#[test]
fn query_parameters_are_type_checked() {
    let spec = hubspot();
    spec.validate_request(
        "GET",
        "/crm/v3/objects/contacts",
        Some("limit=10&archived=false&properties=email&properties=firstname&extra=ignored"),
        None,
    )
    .unwrap();
    // The query may also be given inside the path.
    spec.validate_request("GET", "/crm/v3/objects/contacts?limit=5", None, None)
        .unwrap();
    let errors = errors_of(spec.validate_request(
        "GET",
        "/crm/v3/objects/contacts",
        Some("limit=ten&archived=maybe"),
        None,
    ));
    assert_eq!(
        errors,
        vec![
            "GET /crm/v3/objects/contacts: query parameter `archived`: expected boolean, got string \"maybe\"",
            "GET /crm/v3/objects/contacts: query parameter `limit`: expected integer, got string \"ten\"",
        ]
    );
}

#[test]
fn hubspot_response_validates_and_errors_use_default() {
    let spec = hubspot();
    let ok = json!({
        "status": "COMPLETE",
        "startedAt": "2024-01-01T00:00:00Z",
        "completedAt": "2024-01-01T00:00:01Z",
        "results": [{
            "id": "101",
            "archived": false,
            "new": true,
            "createdAt": "2024-01-01T00:00:00Z",
            "updatedAt": "2024-01-01T00:00:00Z",
            "properties": {"email": "a@b.c"}
        }]
    });
    spec.validate_response("POST", UPSERT, 200, &ok).unwrap();

    let mut bad = ok;
    bad["status"] = json!("DONE");
    bad["results"][0].as_object_mut().unwrap().remove("new");
    let errors = errors_of(spec.validate_response("POST", UPSERT, 200, &bad));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0],
        format!("POST {UPSERT}: response 200: /results/0: missing required property `new`")
    );
    assert!(
        errors[1].starts_with(&format!(
            "POST {UPSERT}: response 200: /status: \"DONE\" is not one of ["
        )),
        "{errors:?}"
    );

    // Any other status uses `default` (a $ref to components/responses/Error, media type */*).
    let error =
        json!({"category": "VALIDATION_ERROR", "correlationId": "c0ffee", "message": "bad"});
    spec.validate_response("POST", UPSERT, 400, &error).unwrap();
    let errors = errors_of(spec.validate_response("POST", UPSERT, 400, &json!({"message": 1})));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing required property `category`"))
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("/message: expected string, got integer"))
    );
}

#[test]
fn operations_are_listed() {
    let ops = hubspot().operations();
    assert!(ops.contains(&("POST".to_owned(), UPSERT.to_owned())));
    assert!(ops.contains(&(
        "PATCH".to_owned(),
        "/crm/v3/objects/contacts/{contactId}".to_owned()
    )));
    assert_eq!(
        hubspot()
            .operation_for("GET", "/crm/v3/objects/contacts/123")
            .as_deref(),
        Some("/crm/v3/objects/contacts/{contactId}")
    );
    // Literal segments win over templated ones.
    assert_eq!(
        hubspot()
            .operation_for("POST", "/crm/v3/objects/contacts/search")
            .as_deref(),
        Some("/crm/v3/objects/contacts/search")
    );
    assert!(hubspot().base_paths().is_empty());
    assert_eq!(pipedrive().base_paths(), vec!["/v1".to_owned()]);
    assert!(pipedrive().operations().len() > 250);
}

// ----- Zoho (cross-file references) --------------------------------------------------------------

#[test]
fn zoho_upsert_validates_and_fails_accordingly() {
    let spec = zoho();
    let body = json!({
        "data": [{
            "Last_Name": "Doe",
            "Email": "jane@example.com",
            "Referral_Code": "R-1",
        }],
        "duplicate_check_fields": ["Email"],
        "trigger": ["workflow"]
    });
    spec.validate_request("POST", "/crm/v8/Leads/upsert", None, Some(&body))
        .unwrap();
    assert_eq!(
        spec.operation_for("POST", "/crm/v8/Leads/upsert")
            .as_deref(),
        Some("/crm/v8/{module_api_name}/upsert")
    );

    let errors = errors_of(spec.validate_request(
        "POST",
        "/crm/v8/Leads/upsert",
        None,
        Some(&json!({"data": {"Last_Name": "Doe"}, "trigger": "workflow"})),
    ));
    assert_eq!(
        errors,
        vec![
            "POST /crm/v8/Leads/upsert: body: /data: expected array, got object",
            "POST /crm/v8/Leads/upsert: body: /trigger: expected array, got string",
        ]
    );
    let errors = errors_of(spec.validate_request(
        "POST",
        "/crm/v8/Leads/upsert",
        None,
        Some(&json!({"data": [{"id": 5}]})),
    ));
    assert_eq!(
        errors,
        vec!["POST /crm/v8/Leads/upsert: body: /data/0/id: expected string, got integer"]
    );
}

#[test]
fn zoho_sibling_files_are_loaded_and_missing_ones_reported() {
    let spec = zoho();
    let debug = format!("{spec:?}");
    assert!(debug.contains("common.json"), "{debug}");
    let unresolved = spec.unresolved_refs();
    assert!(
        unresolved
            .iter()
            .any(|r| r.contains("users.json#/components/schemas/Minified_User")),
        "{unresolved:?}"
    );
    assert!(
        !unresolved.iter().any(|r| r.contains("common.json")),
        "{unresolved:?}"
    );

    // The same text without a base folder cannot load common.json.
    let text = std::fs::read_to_string(data("zoho/record.json")).unwrap();
    let alone = OpenApi::from_str(&text, None).unwrap();
    assert!(
        alone
            .unresolved_refs()
            .iter()
            .any(|r| r.contains("common.json"))
    );
    let with_dir = OpenApi::from_str(&text, Some(&data("zoho"))).unwrap();
    assert!(
        !with_dir
            .unresolved_refs()
            .iter()
            .any(|r| r.contains("common.json"))
    );
}

#[test]
fn zoho_response_validates() {
    let spec = zoho();
    let path = "/crm/v8/Leads/upsert";
    let ok = json!({
        "data": [{
            "status": "success",
            "code": "SUCCESS",
            "action": "insert",
            "duplicate_field": "Email",
            "message": "record added",
            "details": {
                "id": "5725767000000524001",
                "Created_Time": "2024-01-01T10:00:00+05:30",
                // users.json is not available: any value is accepted
                "Created_By": {"id": "1", "name": "Admin"}
            }
        }]
    });
    spec.validate_response("POST", path, 200, &ok).unwrap();
    let error = json!({"data": [{"status": "error", "code": "MANDATORY_NOT_FOUND",
        "message": "required field not found", "details": {"api_name": "Last_Name"}}]});
    spec.validate_response("POST", path, 200, &error).unwrap();

    // Zoho's 200 schema is `oneOf: [{data: [...]}, API_Exception]` with no required properties, so
    // only shape errors are caught: `data` not an array and `status` not a string.
    let bad = json!({"data": "x", "status": 5});
    let errors = errors_of(spec.validate_response("POST", path, 200, &bad));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "POST /crm/v8/Leads/upsert: response 200: matches none of the 2 oneOf alternatives (#1: /data: expected array, got string; #2: /status: expected string, got integer)"
        ),
        "{errors:?}"
    );
    let errors = errors_of(spec.validate_response("POST", path, 200, &json!([])));
    assert!(
        errors[0].contains("#1: expected object, got array"),
        "{errors:?}"
    );

    let errors = errors_of(spec.validate_response("POST", path, 500, &ok));
    assert_eq!(
        errors,
        vec!["POST /crm/v8/Leads/upsert: response 500: status not declared (declared: 200)"]
    );
}

#[test]
fn lenient_nulls_accept_undeclared_nulls() {
    let body =
        json!({"inputs": [{"id": "a@b.c", "idProperty": null, "properties": {"email": null}}]});
    let errors = errors_of(hubspot().validate_request("POST", UPSERT, None, Some(&body)));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].ends_with("/inputs/0/idProperty: expected string, got null"));
    let lenient = OpenApi::load(data("hubspot/contacts.json"))
        .unwrap()
        .with_lenient_nulls(true);
    lenient
        .validate_request("POST", UPSERT, None, Some(&body))
        .unwrap();
}

// ----- Pipedrive (2.4 MB YAML) -------------------------------------------------------------------

#[test]
fn pipedrive_person_create() {
    let spec = pipedrive();
    let body = json!({
        "name": "Jane Doe",
        "email": [{"value": "jane@example.com", "primary": true, "label": "work"}],
        "visible_to": "3",
        "abcdef0123456789abcdef0123456789abcdef01": "R-1"
    });
    spec.validate_request("POST", "/v1/persons", None, Some(&body))
        .unwrap();
    // The base path is optional.
    spec.validate_request("POST", "/persons", None, Some(&body))
        .unwrap();

    let errors = errors_of(spec.validate_request(
        "POST",
        "/v1/persons",
        None,
        Some(&json!({"name": "Jane", "email": "jane@example.com"})),
    ));
    assert_eq!(
        errors,
        vec!["POST /v1/persons: body: /email: expected array, got string"]
    );
    let errors =
        errors_of(spec.validate_request("POST", "/v1/persons", None, Some(&json!({"email": []}))));
    assert_eq!(
        errors,
        vec!["POST /v1/persons: body: missing required property `name`"]
    );
}

#[test]
fn pipedrive_parameters() {
    let spec = pipedrive();
    spec.validate_request("GET", "/v1/deals/42", None, None)
        .unwrap();
    let errors = errors_of(spec.validate_request("GET", "/v1/deals/abc", None, None));
    assert_eq!(
        errors,
        vec!["GET /v1/deals/abc: path parameter `id`: expected integer, got string \"abc\""]
    );

    spec.validate_request(
        "GET",
        "/v1/persons/search",
        Some("term=jane&fields=email"),
        None,
    )
    .unwrap();
    let errors =
        errors_of(spec.validate_request("GET", "/v1/persons/search", Some("fields=address"), None));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.contains(
            &"GET /v1/persons/search: missing required query parameter `term`".to_owned()
        )
    );
    assert!(errors.iter().any(|e| e.starts_with(
        "GET /v1/persons/search: query parameter `fields`: \"address\" is not one of ["
    )));
}

#[test]
fn pipedrive_form_body_and_spec_example_response() {
    let spec = pipedrive();
    let form = json!({"grant_type": "refresh_token", "refresh_token": "abc"});
    spec.validate_request("POST", "/oauth/token", None, Some(&form))
        .unwrap();
    let errors = errors_of(spec.validate_request(
        "POST",
        "/oauth/token",
        None,
        Some(&json!({"grant_type": "password"})),
    ));
    assert!(
        errors[0].contains("/grant_type: \"password\" is not one of"),
        "{errors:?}"
    );

    // The vendor's own example answer for POST /persons validates against its schema.
    let text = std::fs::read_to_string(data("pipedrive/openapi-v1.yaml")).unwrap();
    let raw: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let example = &raw["paths"]["/persons"]["post"]["responses"]["201"]["content"]["application/json"]
        ["example"];
    let example: Value = serde_json::to_value(example).unwrap();
    assert_eq!(example["data"]["name"], "Will Smith");
    spec.validate_response("POST", "/v1/persons", 201, &example)
        .unwrap();
    let mut bad = example;
    bad["data"]["id"] = json!("one");
    let errors = errors_of(spec.validate_response("POST", "/v1/persons", 201, &bad));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("/data/id: expected integer, got string")),
        "{errors:?}"
    );
}

// ----- recorded requests, end to end -------------------------------------------------------------

#[tokio::test]
async fn recorded_requests_validate_end_to_end() {
    let sim = Simulator::start(|req: &RecordedRequest| {
        if req.path.ends_with("/batch/upsert") {
            SimResponse::json(
                200,
                &json!({
                    "status": "COMPLETE",
                    "startedAt": "2024-01-01T00:00:00Z",
                    "completedAt": "2024-01-01T00:00:01Z",
                    "results": []
                }),
            )
        } else {
            SimResponse::json(200, &json!({"id": "1"}))
        }
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();

    let response = client
        .post(sim.url(UPSERT))
        .bearer_auth("token")
        .json(&upsert_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();

    let mut bad = upsert_body();
    bad["inputs"][0]["properties"]["email"] = json!(false);
    client
        .post(sim.url(UPSERT))
        .json(&bad)
        .send()
        .await
        .unwrap();
    client
        .post(sim.url(UPSERT))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    client
        .post(sim.url(UPSERT))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    client
        .get(sim.url("/crm/v3/objects/contacts/a%40b.c?idProperty=email&archived=maybe"))
        .send()
        .await
        .unwrap();

    let recorded = sim.requests();
    assert_eq!(recorded.len(), 5);
    let spec = hubspot();
    spec.validate_recorded(&recorded[0]).unwrap();
    spec.validate_response("POST", &recorded[0].path, 200, &answer)
        .unwrap();
    let replayed = SimResponse::json(200, &answer);
    spec.validate_sim_response(&recorded[0], &replayed).unwrap();

    assert_eq!(
        errors_of(spec.validate_recorded(&recorded[1])),
        vec![format!(
            "POST {UPSERT}: body: /inputs/0/properties/email: expected string, got boolean"
        )]
    );
    let errors = errors_of(spec.validate_recorded(&recorded[2]));
    assert_eq!(
        errors,
        vec![format!(
            "POST {UPSERT}: body: content type text/plain is not accepted (accepts application/json)"
        )]
    );
    let errors = errors_of(spec.validate_recorded(&recorded[3]));
    assert!(
        errors[0].starts_with(&format!("POST {UPSERT}: body: not valid JSON")),
        "{errors:?}"
    );
    let errors = errors_of(spec.validate_recorded(&recorded[4]));
    assert_eq!(
        errors,
        vec![
            "GET /crm/v3/objects/contacts/a%40b.c: query parameter `archived`: expected boolean, got string \"maybe\""
        ]
    );
}

#[tokio::test]
async fn recorded_form_requests_validate() {
    let sim = Simulator::start(|_: &RecordedRequest| SimResponse::empty(200))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for body in [
        "grant_type=refresh_token&refresh_token=abc",
        "grant_type=nope",
    ] {
        client
            .post(sim.url("/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    client
        .post(sim.url("/oauth/token"))
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    let recorded = sim.requests();
    let spec = pipedrive();
    spec.validate_recorded(&recorded[0]).unwrap();
    assert!(spec.validate_recorded(&recorded[1]).is_err());
    let errors = errors_of(spec.validate_recorded(&recorded[2]));
    assert_eq!(
        errors,
        vec![
            "POST /oauth/token: body: content type application/json is not accepted (accepts application/x-www-form-urlencoded)"
        ]
    );
}

// ----- robustness ---------------------------------------------------------------------------------

#[test]
fn load_errors_are_readable() {
    let err = OpenApi::load(data("does-not-exist.json")).unwrap_err();
    assert!(
        err.to_string().contains("does-not-exist.json: cannot read"),
        "{err}"
    );
    let err = OpenApi::from_str("{\"openapi\": \"3.0.0\"}", None).unwrap_err();
    assert!(err.to_string().contains("no `paths` object"), "{err}");
    let err = OpenApi::from_str("{\"swagger\": \"2.0\", \"paths\": {}}", None).unwrap_err();
    assert!(err.to_string().contains("Swagger 2.0"), "{err}");
    let err = OpenApi::from_str("paths: [unclosed", None).unwrap_err();
    assert!(err.to_string().contains("invalid YAML"), "{err}");
    let err = OpenApi::from_str("{ nope", None).unwrap_err();
    assert!(err.to_string().contains("invalid JSON"), "{err}");
}

const TOY: &str = r##"
openapi: 3.0.3
info: {title: toy, version: "1"}
servers:
  - url: "https://{region}.example.com/api/v1"
    variables: {region: {default: eu}}
paths:
  /things/{id}/v{version}.json:
    parameters:
      - {name: id, in: path, required: true, schema: {type: integer, minimum: 1}}
    put:
      parameters:
        - {name: X-Tenant, in: header, required: true, schema: {type: string}}
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Thing"}
      responses:
        2XX:
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Thing"}
        "204": {description: none}
  /loop:
    post:
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Loop"}
      responses: {default: {description: x}}
  /dangling:
    post:
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Nope"}
      responses: {default: {description: x}}
components:
  schemas:
    Loop: {$ref: "#/components/schemas/Loop2"}
    Loop2: {$ref: "#/components/schemas/Loop"}
    Tree:
      type: object
      properties:
        children: {type: array, items: {$ref: "#/components/schemas/Tree"}}
    Thing:
      type: object
      additionalProperties: false
      required: [name, kind]
      properties:
        id: {type: integer, readOnly: true}
        name: {type: string, minLength: 2, maxLength: 5}
        kind: {type: string, enum: [a, b], nullable: true}
        score: {type: number, minimum: 0, maximum: 10, exclusiveMaximum: true}
        tags: {type: array, items: {type: string}, minItems: 1, maxItems: 2}
        secret: {type: string, writeOnly: true}
        tree: {$ref: "#/components/schemas/Tree"}
        either:
          oneOf:
            - {type: string}
            - {type: integer}
            - {type: number}
        not_five: {not: {enum: [5]}}
        all:
          allOf:
            - {type: object, required: [a]}
            - {type: object, required: [b]}
"##;

fn toy() -> OpenApi {
    OpenApi::from_str(TOY, None).expect("toy spec")
}

#[test]
fn toy_spec_covers_the_keywords() {
    let spec = toy();
    assert_eq!(spec.base_paths(), vec!["/api/v1".to_owned()]);
    let path = "/api/v1/things/7/v2.json";
    let ok = json!({"name": "abc", "kind": null, "score": 9.5, "tags": ["x"], "secret": "s",
                    "either": 1.5, "not_five": 4, "all": {"a": 1, "b": 2},
                    "tree": {"children": [{"children": [{}]}]}});
    spec.validate_request("PUT", path, None, Some(&ok)).unwrap();

    let bad = json!({"id": "x", "name": "a", "kind": "c", "score": 10, "tags": [], "extra": 1,
                     "either": true, "not_five": 5, "all": {"a": 1},
                     "tree": {"children": [{"children": 3}]}});
    let errors = errors_of(spec.validate_request("PUT", path, None, Some(&bad)));
    let expected = [
        "/all: missing required property `b`",
        "/either: matches none of the 3 oneOf alternatives",
        ": unknown property `extra` (additionalProperties is false)",
        "/id: expected integer, got string",
        "/kind: \"c\" is not one of [\"a\", \"b\"]",
        "/name: string is 1 characters long, minLength is 2",
        "/not_five: matches the schema under `not`",
        "/score: 10 is not less than 10",
        "/tags: 0 items, minItems is 1",
        "/tree/children/0/children: expected array, got integer",
    ];
    for fragment in expected {
        assert!(
            errors.iter().any(|e| e.contains(fragment)),
            "missing {fragment:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");

    // readOnly `id` is not required in requests; writeOnly `secret` is not required in responses
    // (neither is required here, so check via path parameter and response instead).
    let errors =
        errors_of(spec.validate_request("PUT", "/api/v1/things/0/v2.json", None, Some(&ok)));
    assert_eq!(
        errors,
        vec!["PUT /api/v1/things/0/v2.json: path parameter `id`: 0 is less than the minimum 1"]
    );
    // 2XX range and a declared empty 204.
    spec.validate_response("PUT", path, 201, &json!({"name": "abc", "kind": "a"}))
        .unwrap();
    spec.validate_response("PUT", path, 204, &Value::Null)
        .unwrap();
    let errors = errors_of(spec.validate_response("PUT", path, 204, &json!({})));
    assert!(
        errors[0].contains("no response body is declared"),
        "{errors:?}"
    );

    // A recorded request also checks required headers.
    let recorded = RecordedRequest {
        method: "PUT".into(),
        path: path.into(),
        query: None,
        headers: vec![(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        )],
        body: ok.to_string().into_bytes(),
    };
    let errors = errors_of(spec.validate_recorded(&recorded));
    assert_eq!(
        errors,
        vec![format!("PUT {path}: missing required header `X-Tenant`")]
    );
    let mut with_header = recorded;
    with_header.headers.push(("x-tenant".into(), "t1".into()));
    spec.validate_recorded(&with_header).unwrap();
}

#[test]
fn strict_one_of_rejects_ambiguous_matches() {
    let body = json!({"name": "abc", "kind": "a", "either": 3});
    let path = "/api/v1/things/7/v2.json";
    // 3 is both an integer and a number.
    toy()
        .validate_request("PUT", path, None, Some(&body))
        .unwrap();
    let errors = errors_of(toy().with_strict_one_of(true).validate_request(
        "PUT",
        path,
        None,
        Some(&body),
    ));
    assert!(
        errors[0].contains("matches 2 oneOf alternatives, expected exactly one"),
        "{errors:?}"
    );
}

#[test]
fn ref_cycles_and_dangling_refs_do_not_crash() {
    let spec = toy();
    let errors = errors_of(spec.validate_request("POST", "/api/v1/loop", None, Some(&json!({}))));
    assert!(errors[0].contains("schema nesting too deep"), "{errors:?}");
    let errors =
        errors_of(spec.validate_request("POST", "/api/v1/dangling", None, Some(&json!({}))));
    assert_eq!(
        errors,
        vec!["POST /api/v1/dangling: body: unresolved $ref #/components/schemas/Nope"]
    );
    assert!(spec.unresolved_refs().iter().any(|r| r.contains("Nope")));

    // A very deep (but finite) recursive body against a recursive schema.
    let mut deep = json!({});
    for _ in 0..120 {
        deep = json!({"children": [deep]});
    }
    let body = json!({"name": "abc", "kind": "a", "tree": deep});
    let result = spec.validate_request("PUT", "/api/v1/things/7/v2.json", None, Some(&body));
    assert!(result.unwrap_err()[0].contains("schema nesting too deep"));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z@.]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("inputs".to_owned()),
                    Just("properties".to_owned()),
                    Just("id".to_owned()),
                    Just("data".to_owned()),
                    Just("email".to_owned()),
                    Just("name".to_owned()),
                    Just("$ref".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_never_panic(body in arb_json(), query in "[a-z=&%0-9]{0,20}") {
        let _ = hubspot().validate_request("POST", UPSERT, Some(&query), Some(&body));
        let _ = hubspot().validate_response("POST", UPSERT, 200, &body);
        let _ = zoho().validate_request("POST", "/crm/v8/Leads/upsert", None, Some(&body));
        let _ = zoho().validate_response("POST", "/crm/v8/Leads/upsert", 200, &body);
        let _ = pipedrive().validate_request("POST", "/v1/persons", Some(&query), Some(&body));
        let _ = pipedrive().validate_response("POST", "/v1/persons", 201, &body);
        let _ = toy().validate_request("PUT", "/api/v1/things/1/v1.json", Some(&query), Some(&body));
    }

    #[test]
    fn random_specs_never_panic(spec in arb_json(), body in arb_json(), path in "/[a-z{}/]{0,12}") {
        let document = json!({"openapi": "3.0.0", "paths": {"/x/{id}": {"post": {
            "parameters": [{"name": "id", "in": "path", "schema": spec}],
            "requestBody": {"content": {"application/json": {"schema": spec}}},
            "responses": {"default": {"content": {"application/json": {"schema": spec}}}}
        }}, "/y": spec}, "components": {"schemas": {"S": spec}}});
        if let Ok(api) = OpenApi::from_str(&document.to_string(), None) {
            let _ = api.validate_request("POST", "/x/1", Some("a=b"), Some(&body));
            let _ = api.validate_response("POST", "/x/1", 200, &body);
            let _ = api.validate_request("GET", &path, None, Some(&body));
            let _ = api.operations();
        }
        let _ = OpenApi::from_str(&spec.to_string(), None);
    }
}

#[test]
fn check_requests_reports_unknown_and_invalid_requests_and_drops_only_what_is_tolerated() {
    let req = |method: &str, path: &str, body: Value| RecordedRequest {
        method: method.into(),
        path: path.into(),
        query: None,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&body).unwrap(),
    };
    let specs = [OpenApi::load(data("hubspot/contacts.json")).unwrap()];
    let good = req("POST", UPSERT, upsert_body());
    let bad = req("POST", UPSERT, json!({"inputs": "not an array"}));
    let unknown = req("GET", "/crm/v3/nowhere", Value::Null);
    let other = req("GET", "/elsewhere", Value::Null);
    let keep = |p: &str| p.to_owned();
    let none = |_: &RecordedRequest, _: &str| false;
    assert_eq!(
        OpenApi::check_requests(&specs, [&good, &other], "/crm/", keep, none),
        Ok(1),
        "outside the prefix: not checked"
    );
    let problems =
        OpenApi::check_requests(&specs, [&good, &bad, &unknown], "/crm/", keep, none).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no description has GET /crm/v3/nowhere"))
    );
    assert!(
        problems.iter().any(|p| p.contains("inputs")),
        "{problems:?}"
    );
    // Tolerating exactly the body error leaves only the unknown request.
    let tolerate = |_: &RecordedRequest, e: &str| e.contains("inputs");
    let problems =
        OpenApi::check_requests(&specs, [&bad, &unknown], "/crm/", keep, tolerate).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    // A rewrite maps the path to the one the description names.
    let moved = req("POST", "/v3/upsert", upsert_body());
    let to_spec = |p: &str| p.replace("/v3/upsert", UPSERT);
    assert_eq!(
        OpenApi::check_requests(&specs, [&moved], "/v3/", to_spec, none),
        Ok(1)
    );
}
