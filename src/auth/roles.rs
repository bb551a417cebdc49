//! Where a token's role is read from: a claim path and a map from the
//! identity provider's role names to ours.
//!
//! Providers put roles in places of their own (Keycloak in
//! `realm_access.roles`, an array; others in a custom string claim) and call
//! them what their operators chose. `--role-claim` says where to look and
//! `--role-map` says what the names mean here, so that no provider has to be
//! configured to speak usersvc's vocabulary.

use std::fmt;

use serde_json::{Map, Value};

use crate::domain::Role;

/// The claim a role is read from, and how its values are named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleClaim {
    /// The claim's path, one name per nested object: `realm_access.roles`
    /// is `["realm_access", "roles"]`.
    path: Vec<String>,
    /// The provider's names for our roles. Empty: the values `admin`,
    /// `editor` and `viewer` are taken as they are.
    map: Vec<(String, Role)>,
}

/// The claim read by default: the one `usersvc token` mints.
pub const DEFAULT_CLAIM: &str = "role";

impl Default for RoleClaim {
    fn default() -> Self {
        Self {
            path: vec![DEFAULT_CLAIM.to_owned()],
            map: Vec::new(),
        }
    }
}

impl RoleClaim {
    /// A claim path such as `realm_access.roles`, and `IDP_ROLE=ROLE` pairs.
    pub fn parse<S: AsRef<str>>(claim: &str, map: &[S]) -> Result<Self, String> {
        let path: Vec<String> = claim.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!(
                "--role-claim {claim:?}: expected a claim name, or names joined by dots \
                 such as realm_access.roles"
            ));
        }
        let map = map
            .iter()
            .map(|pair| {
                let pair = pair.as_ref();
                let (theirs, ours) = pair.split_once('=').ok_or_else(|| {
                    format!(
                        "--role-map {pair:?}: expected IDP_ROLE=ROLE, such as usersvc-admins=admin"
                    )
                })?;
                let role = Role::from_name(ours).ok_or_else(|| {
                    format!("--role-map {pair:?}: {ours:?} is not admin, editor or viewer")
                })?;
                if theirs.is_empty() {
                    return Err(format!(
                        "--role-map {pair:?}: the provider's role name is empty"
                    ));
                }
                Ok((theirs.to_owned(), role))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { path, map })
    }

    /// The highest role the claims carry, if any: the claim may hold one name
    /// or an array of them, and names that mean nothing here are ignored.
    /// A claim whose own name has dots (Auth0's namespaced claims, such as
    /// `https://example.com/roles`) is found by that name first.
    pub fn role(&self, claims: &Map<String, Value>) -> Option<Role> {
        let value = match claims.get(&self.path.join(".")) {
            Some(value) => value,
            None => {
                let (first, rest) = self.path.split_first()?;
                let mut value = claims.get(first)?;
                for name in rest {
                    value = value.as_object()?.get(name)?;
                }
                value
            }
        };
        let names: Vec<&str> = match value {
            Value::String(name) => vec![name.as_str()],
            Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        names
            .into_iter()
            .filter_map(|name| self.meaning(name))
            .min_by_key(|role| rank(*role))
    }

    /// What one of the provider's role names means here.
    fn meaning(&self, name: &str) -> Option<Role> {
        if self.map.is_empty() {
            return Role::ALL.into_iter().find(|role| role.as_str() == name);
        }
        self.map
            .iter()
            .find(|(theirs, _)| theirs == name)
            .map(|(_, role)| *role)
    }

    /// The names that give a role, for a refusal's message.
    pub fn accepted(&self) -> String {
        let names: Vec<&str> = if self.map.is_empty() {
            Role::ALL.iter().map(|role| role.as_str()).collect()
        } else {
            self.map.iter().map(|(theirs, _)| theirs.as_str()).collect()
        };
        names.join(", ")
    }
}

impl fmt::Display for RoleClaim {
    /// The claim's path as configured: `realm_access.roles`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path.join("."))
    }
}

/// Highest first: when a token carries several roles, the highest wins.
fn rank(role: Role) -> u8 {
    match role {
        Role::Admin => 0,
        Role::Editor => 1,
        Role::Viewer => 2,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_default_claim_takes_our_names_as_they_are() {
        let roles = RoleClaim::default();
        assert_eq!(
            roles.role(&claims(json!({"role": "editor"}))),
            Some(Role::Editor)
        );
        assert_eq!(
            roles.role(&claims(json!({"role": "Editor"}))),
            None,
            "exact names"
        );
        assert_eq!(roles.role(&claims(json!({"role": 3}))), None);
        assert_eq!(roles.role(&claims(json!({}))), None);
    }

    #[test]
    fn a_nested_array_is_searched_and_the_highest_role_wins() {
        let roles = RoleClaim::parse(
            "realm_access.roles",
            &[
                "usersvc-viewers=viewer",
                "usersvc-admins=admin",
                "writers=editor",
            ],
        )
        .unwrap();
        let keycloak = claims(json!({
            "realm_access": {"roles": ["offline_access", "usersvc-viewers", "writers"]}
        }));
        assert_eq!(roles.role(&keycloak), Some(Role::Editor));
        let admin = claims(json!({"realm_access": {"roles": ["usersvc-admins", "writers"]}}));
        assert_eq!(roles.role(&admin), Some(Role::Admin));
        // With a map, only the map's names count.
        let unmapped = claims(json!({"realm_access": {"roles": ["admin"]}}));
        assert_eq!(roles.role(&unmapped), None);
        assert_eq!(roles.role(&claims(json!({"realm_access": "admin"}))), None);
        assert_eq!(roles.to_string(), "realm_access.roles");
        assert_eq!(roles.accepted(), "usersvc-viewers, usersvc-admins, writers");
    }

    #[test]
    fn a_claim_named_with_dots_is_found_by_its_whole_name() {
        let roles = RoleClaim::parse("https://example.com/roles", &[] as &[&str]).unwrap();
        let auth0 = claims(json!({"https://example.com/roles": ["viewer", "editor"]}));
        assert_eq!(roles.role(&auth0), Some(Role::Editor));
    }

    #[test]
    fn bad_paths_and_maps_are_refused_with_the_expected_form() {
        assert!(RoleClaim::parse("realm_access..roles", &[] as &[&str]).is_err());
        let err = RoleClaim::parse("role", &["admins"]).unwrap_err();
        assert!(err.contains("IDP_ROLE=ROLE"), "{err}");
        let err = RoleClaim::parse("role", &["admins=root"]).unwrap_err();
        assert!(err.contains("not admin, editor or viewer"), "{err}");
    }
}
