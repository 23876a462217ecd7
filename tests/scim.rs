//! SCIM 2.0 provisioning of users, with request bodies from RFC 7644's
//! examples, on SQLite and PostgreSQL.

mod common;

use common::{Credentials, TestApp, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Scim {
    app: TestApp,
    creds: Credentials,
}

async fn scim(backend: common::Backend) -> Option<Scim> {
    let app = spawn_app(backend).await?;
    let creds = app.create_client().await;
    Some(Scim { app, creds })
}

/// RFC 7644 §3.3's example, as a provider sends it.
fn bjensen() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "bjensen",
        "externalId": "bjensen",
        "name": {
            "formatted": "Ms. Barbara J Jensen III",
            "familyName": "Jensen",
            "givenName": "Barbara"
        }
    })
}

impl Scim {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .http
            .request(method, self.app.url(path))
            .header(
                "authorization",
                format!("Bearer {}:{}", self.creds.client_key, self.creds.api_key),
            )
            .header("content-type", "application/scim+json")
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self, body: Value) -> Value {
        let (status, user) = self.send(Method::POST, "/scim/v2/Users", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        user
    }
}

fn patch(operations: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})
}

on_both_backends! { scim;

async fn discovery_and_authentication(s) {
    for path in ["/scim/v2/ServiceProviderConfig", "/scim/v2/ResourceTypes", "/scim/v2/Schemas"] {
        let response = s.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], "application/scim+json");
    }
    let anonymous = s.app.http.get(s.app.url("/scim/v2/Users")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    assert_eq!(body["status"], "401");
    // The scheme is case-insensitive (RFC 7235 §2.1); some providers send it lower-case.
    let lower = s.app.http.get(s.app.url("/scim/v2/Users"))
        .header("authorization", format!("bearer {}:{}", s.creds.client_key, s.creds.api_key))
        .send().await.unwrap();
    assert_eq!(lower.status(), StatusCode::OK);
}

async fn a_push_creates_updates_and_deactivates_a_user(s) {
    let created = s.create(bjensen()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["userName"], "bjensen");
    assert_eq!(created["displayName"], "Ms. Barbara J Jensen III");
    assert_eq!(created["active"], true);
    assert!(created["meta"]["location"].as_str().unwrap().ends_with(&format!("/scim/v2/Users/{id}")));
    // The user is memberd's, under the provider's stable id.
    let user: Value = s.app.snapshot("bjensen").await.json().await.unwrap();
    assert_eq!(user["is_active"], true);

    let mut again = bjensen();
    again["userName"] = "BJensen".into();
    let (status, error) = s.send(Method::POST, "/scim/v2/Users", Some(again)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["scimType"], "uniqueness");

    // RFC 7644 §3.5.2: replace without a path, with an email.
    let (status, patched) = s.send(Method::PATCH, &format!("/scim/v2/Users/{id}"), Some(patch(json!([
        {"op": "replace", "value": {"emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}], "nickName": "Babs"}}
    ])))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["emails"][0]["value"], "bjensen@example.com");

    // A grant, to see it survive deactivation.
    let grant = s.app.admin(&s.creds, "/admin/permissions/grant")
        .json(&json!({"authentik_sub": "bjensen", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"}))
        .send().await.unwrap();
    assert_eq!(grant.status(), StatusCode::CREATED);

    let (status, off) = s.send(Method::PATCH, &format!("/scim/v2/Users/{id}"), Some(patch(json!([
        {"op": "replace", "path": "active", "value": false}
    ])))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(off["active"], false);
    let snapshot: Value = s.app.snapshot("bjensen").await.json().await.unwrap();
    assert_eq!(snapshot["is_active"], false);
    assert_eq!(snapshot["permissions"].as_array().unwrap().len(), 1, "the grant is kept");
    let check: Value = s.app.internal(Method::POST, "/v1/check")
        .json(&json!({"subject": "bjensen", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(check["allowed"], false, "an inactive user may do nothing");

    // PUT replaces: back to active, a new display name.
    let mut replacement = bjensen();
    replacement["displayName"] = "Babs Jensen".into();
    let (status, put) = s.send(Method::PUT, &format!("/scim/v2/Users/{id}"), Some(replacement)).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["displayName"], "Babs Jensen");
    assert_eq!(put["active"], true);
    let snapshot: Value = s.app.snapshot("bjensen").await.json().await.unwrap();
    assert_eq!(snapshot["permissions"].as_array().unwrap().len(), 1, "the grant was kept");

    let deleted = s.request(Method::DELETE, &format!("/scim/v2/Users/{id}")).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, gone) = s.send(Method::GET, &format!("/scim/v2/Users/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gone["active"], false, "delete deactivates");
}

async fn lists_filter_and_paginate(s) {
    for name in ["alice", "bob", "carol"] {
        s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
            "externalId": format!("ext-{name}"), "emails": [{"value": format!("{name}@example.org"), "primary": true}]})).await;
    }
    let (status, by_name) = s.send(Method::GET, "/scim/v2/Users?filter=userName%20eq%20%22BOB%22", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_name["totalResults"], 1);
    assert_eq!(by_name["Resources"][0]["userName"], "bob");
    let (_, by_external) = s.send(Method::GET, "/scim/v2/Users?filter=externalId%20eq%20%22ext-carol%22", None).await;
    assert_eq!(by_external["Resources"][0]["userName"], "carol");
    let (_, page) = s.send(Method::GET, "/scim/v2/Users?startIndex=2&count=1", None).await;
    assert_eq!(page["totalResults"], 3);
    assert_eq!(page["startIndex"], 2);
    assert_eq!(page["itemsPerPage"], 1);
    assert_eq!(page["Resources"][0]["userName"], "bob");
    let (_, none) = s.send(Method::GET, "/scim/v2/Users?filter=userName%20eq%20%22nobody%22", None).await;
    assert_eq!(none["totalResults"], 0);
}

async fn errors_come_in_scim_form(s) {
    let (status, bad_filter) = s.send(Method::GET, "/scim/v2/Users?filter=title%20pr", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_filter["scimType"], "invalidFilter");
    let response = s.request(Method::POST, "/scim/v2/Users").body("{not json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["scimType"], "invalidSyntax");
    let (status, missing) = s.send(Method::POST, "/scim/v2/Users", Some(json!({"schemas": []}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(missing["scimType"], "invalidValue");
    let (status, unknown) = s.send(Method::GET, "/scim/v2/Users/2819c223-7f76-453a-919d-413861904646", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(unknown["status"], "404");
}


async fn groups_linked_to_a_role_carry_it_to_their_members(s) {
    let alice = s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"})).await;
    let bob = s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bob"})).await;
    let (alice_id, bob_id) = (alice["id"].as_str().unwrap(), bob["id"].as_str().unwrap());
    let role = s.app.admin(&s.creds, "/admin/roles").json(&json!({"name": "editors"})).send().await.unwrap();
    assert_eq!(role.status(), StatusCode::CREATED);
    let roles_of = |sub: &'static str| {
        let app = &s.app;
        async move {
            let snapshot: Value = app.snapshot(sub).await.json().await.unwrap();
            snapshot["roles"].as_array().unwrap().iter().map(|r| r["role"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };

    let (status, group) = s.send(Method::POST, "/scim/v2/Groups", Some(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Editors",
        "members": [{"value": alice_id, "display": "alice"}]
    }))).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let group_id = group["id"].as_str().unwrap().to_owned();
    assert_eq!(group["members"].as_array().unwrap().len(), 1);
    assert!(roles_of("alice").await.is_empty(), "an unlinked group gives nothing");

    let linked = s.app.http.put(s.app.url(&format!("/admin/scim/groups/{group_id}/role")))
        .header("X-Client-Key", &s.creds.client_key).header("X-API-Key", &s.creds.api_key)
        .json(&json!({"role": "editors"})).send().await.unwrap();
    assert_eq!(linked.status(), StatusCode::OK);
    assert_eq!(roles_of("alice").await, ["editors"]);

    // RFC 7644 §3.5.2.1: add a member.
    let (status, _) = s.send(Method::PATCH, &format!("/scim/v2/Groups/{group_id}"), Some(patch(json!([
        {"op": "add", "path": "members", "value": [{"display": "bob", "value": bob_id}]}
    ])))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(roles_of("bob").await, ["editors"]);
    // §3.5.2.2: remove one by filter.
    let (status, after) = s.send(Method::PATCH, &format!("/scim/v2/Groups/{group_id}"), Some(patch(json!([
        {"op": "remove", "path": format!("members[value eq \"{alice_id}\"]")}
    ])))).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert!(roles_of("alice").await.is_empty());
    assert_eq!(after["members"].as_array().unwrap().len(), 1);

    let (_, found) = s.send(Method::GET, "/scim/v2/Groups?filter=displayName%20eq%20%22editors%22", None).await;
    assert_eq!(found["totalResults"], 1);
    let (status, _) = s.send(Method::PATCH, &format!("/scim/v2/Groups/{group_id}"), Some(patch(json!([
        {"op": "add", "path": "members", "value": [{"value": "2819c223-7f76-453a-919d-413861904646"}]}
    ])))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "members must be users");

    let deleted = s.request(Method::DELETE, &format!("/scim/v2/Groups/{group_id}")).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(roles_of("bob").await.is_empty(), "deleting the group takes its role");
}

async fn a_role_two_groups_give_stays_while_either_does(s) {
    let alice = s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"})).await;
    let role = s.app.admin(&s.creds, "/admin/roles").json(&json!({"name": "editors"})).send().await.unwrap();
    assert_eq!(role.status(), StatusCode::CREATED);
    let mut groups = Vec::new();
    for name in ["Editors", "Writers"] {
        let (status, group) = s.send(Method::POST, "/scim/v2/Groups", Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name,
            "members": [{"value": alice["id"]}]
        }))).await;
        assert_eq!(status, StatusCode::CREATED, "{group}");
        let id = group["id"].as_str().unwrap().to_owned();
        let linked = s.app.http.put(s.app.url(&format!("/admin/scim/groups/{id}/role")))
            .header("X-Client-Key", &s.creds.client_key).header("X-API-Key", &s.creds.api_key)
            .json(&json!({"role": "editors"})).send().await.unwrap();
        assert_eq!(linked.status(), StatusCode::OK);
        groups.push(id);
    }
    let roles = || async {
        let snapshot: Value = s.app.snapshot("alice").await.json().await.unwrap();
        snapshot["roles"].as_array().unwrap().iter().map(|r| r["role"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(roles().await, ["editors"]);

    // Out of one group, still in the other: the role stays.
    let (status, _) = s.send(Method::PATCH, &format!("/scim/v2/Groups/{}", groups[0]), Some(patch(json!([
        {"op": "remove", "path": "members", "value": [{"value": alice["id"]}]}
    ])))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(roles().await, ["editors"], "Writers still gives the role");
    let deleted = s.request(Method::DELETE, &format!("/scim/v2/Groups/{}", groups[1])).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(roles().await.is_empty(), "no group gives it any more");
}

async fn a_group_patch_is_applied_whole_or_not_at_all(s) {
    let alice = s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"})).await;
    let bob = s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bob"})).await;
    let role = s.app.admin(&s.creds, "/admin/roles").json(&json!({"name": "editors"})).send().await.unwrap();
    assert_eq!(role.status(), StatusCode::CREATED);
    let group = |name: &str| json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name,
        "members": [{"value": alice["id"]}]});
    let (_, editors) = s.send(Method::POST, "/scim/v2/Groups", Some(group("Editors"))).await;
    let (status, _) = s.send(Method::POST, "/scim/v2/Groups", Some(group("Writers"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/scim/v2/Groups/{}", editors["id"].as_str().unwrap());
    let linked = s.app.http.put(s.app.url(&format!("/admin/scim/groups/{}/role", editors["id"].as_str().unwrap())))
        .header("X-Client-Key", &s.creds.client_key).header("X-API-Key", &s.creds.api_key)
        .json(&json!({"role": "editors"})).send().await.unwrap();
    assert_eq!(linked.status(), StatusCode::OK);
    let revision = |snapshot: Value| snapshot["revision"].as_i64().unwrap();
    let before = revision(s.app.snapshot("bob").await.json().await.unwrap());

    // Bob joins, then the rename collides with the other group: the whole
    // PATCH is refused, and Bob neither joined nor came to hold the role.
    let (status, error) = s.send(Method::PATCH, &path, Some(patch(json!([
        {"op": "add", "path": "members", "value": [{"value": bob["id"]}]},
        {"op": "replace", "path": "displayName", "value": "writers"}
    ])))).await;
    assert_eq!((status, &error["scimType"]), (StatusCode::CONFLICT, &json!("uniqueness")), "{error}");
    let (status, error) = s.send(Method::PATCH, &path, Some(patch(json!([
        {"op": "remove", "path": "members", "value": [{"value": alice["id"]}]},
        {"op": "add", "path": "members", "value": [{"value": "2819c223-7f76-453a-919d-413861904646"}]}
    ])))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (_, unchanged) = s.send(Method::GET, &path, None).await;
    assert_eq!(unchanged["displayName"], "Editors");
    let members: Vec<&str> = unchanged["members"].as_array().unwrap().iter().map(|m| m["display"].as_str().unwrap()).collect();
    assert_eq!(members, ["alice"], "{unchanged}");
    let bob_now: Value = s.app.snapshot("bob").await.json().await.unwrap();
    assert_eq!(bob_now["roles"], json!([]), "{bob_now}");
    assert_eq!(revision(bob_now), before, "a refused write moves no revision");

    // A rename alone changes no one's permissions: the revision stays.
    let (status, renamed) = s.send(Method::PATCH, &path, Some(patch(json!([
        {"op": "replace", "path": "displayName", "value": "Editors 2"}
    ])))).await;
    assert_eq!((status, &renamed["displayName"]), (StatusCode::OK, &json!("Editors 2")), "{renamed}");
    assert_eq!(revision(s.app.snapshot("bob").await.json().await.unwrap()), before);
}

async fn a_group_write_that_is_refused_changes_nothing(s) {
    let alice = s.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"})).await;
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Editors",
        "externalId": "g-1", "members": [{"value": alice["id"]}]});
    let (status, created) = s.send(Method::POST, "/scim/v2/Groups", Some(group)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/scim/v2/Groups/{}", created["id"].as_str().unwrap());

    let (status, error) = s.send(Method::POST, "/scim/v2/Groups", Some(json!({"displayName": "Other", "externalId": {}}))).await;
    assert_eq!((status, &error["scimType"]), (StatusCode::BAD_REQUEST, &json!("invalidValue")), "{error}");
    // A PUT replaces the whole group: one without its name is refused, not
    // half applied (the members went before the name was checked).
    let (status, error) = s.send(Method::PUT, &path, Some(json!({"externalId": "g-2", "members": []}))).await;
    assert_eq!((status, &error["scimType"]), (StatusCode::BAD_REQUEST, &json!("invalidValue")), "{error}");
    let (status, error) = s.send(Method::PUT, &path, Some(json!({"displayName": "Renamed",
        "members": [{"value": "2819c223-7f76-453a-919d-413861904646"}]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    let (_, groups) = s.send(Method::GET, "/scim/v2/Groups", None).await;
    assert_eq!(groups["totalResults"], 1, "{groups}");
    let (_, unchanged) = s.send(Method::GET, &path, None).await;
    assert_eq!(unchanged["displayName"], "Editors");
    assert_eq!(unchanged["externalId"], "g-1");
    assert_eq!(unchanged["members"].as_array().unwrap().len(), 1, "{unchanged}");

    let (status, replaced) = s.send(Method::PUT, &path, Some(json!({"displayName": "Renamed", "members": []}))).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["displayName"], "Renamed");
    assert!(replaced.get("externalId").is_none(), "a PUT without externalId clears it: {replaced}");
    assert_eq!(replaced["members"], json!([]));
}

}
