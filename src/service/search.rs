//! SearchUsers: a request read into a query, and the page tokens that say
//! where the next page starts.
//!
//! A token holds the sort key of the last user of its page, so the next
//! page is a keyset read ("after this key"), as cheap 1,000 pages deep as
//! on the first, and a user that exists throughout a walk is on exactly one
//! page. The token ends with an HMAC-SHA256 of itself, the filter and the
//! `order_by` it was issued for, under a key the store keeps with the data
//! (so every replica of a directory accepts the others' tokens, and a
//! restart keeps them good): one that was altered, forged, or sent with
//! another filter or order, is refused before any store sees it. Every
//! value in it is checked again for the shape the order needs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{Filter, Order, SortValue, Violations, filter};
use crate::pb;
use crate::store::Cursor;

/// Users per page when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Most users per page; a larger request gets this many.
pub const MAX_PAGE_SIZE: usize = 1000;

const VERSION: u8 = 1;
const DIGEST_BYTES: usize = 16;
/// Longest token accepted, in characters: five values of an order at their
/// longest, with room to spare.
const MAX_TOKEN_CHARS: usize = 4096;

/// A valid SearchUsersRequest.
#[derive(Debug)]
pub struct SearchQuery {
    pub filter: Option<Filter>,
    pub order: Order,
    pub page_size: usize,
    pub after: Option<Cursor>,
    /// What the tokens of this search are bound to.
    binding: Binding,
}

struct Binding {
    filter: String,
    order_by: String,
    key: [u8; 32],
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("filter", &self.filter)
            .field("order_by", &self.order_by)
            .finish_non_exhaustive()
    }
}

impl SearchQuery {
    /// Reads a request; `key` signs and checks its page tokens.
    pub fn parse(request: pb::SearchUsersRequest, key: [u8; 32]) -> Result<Self, Violations> {
        let mut violations = Violations::default();
        let filter = violations.check(
            "filter",
            filter::parse(&request.filter).map_err(|e| e.to_string()),
        );
        let order = violations.check(
            "order_by",
            Order::parse(&request.order_by, Order::by_creation_time()),
        );
        let page_size = violations.check(
            "page_size",
            match request.page_size {
                0 => Ok(DEFAULT_PAGE_SIZE),
                size => usize::try_from(size)
                    .map(|size| size.min(MAX_PAGE_SIZE))
                    .map_err(|_| "must not be negative"),
            },
        );
        violations.clone().into_result()?;
        let order = order.expect("checked");
        let binding = Binding {
            filter: request.filter,
            order_by: request.order_by,
            key,
        };
        let after = match request.page_token.as_str() {
            "" => None,
            token => {
                let key = binding.decode(token).filter(|key| order.fits(key));
                match key {
                    Some(key) => Some(Cursor(key)),
                    None => {
                        violations.check::<(), _>(
                            "page_token",
                            Err("is not a token this server issued for this filter and order_by: send the same filter and order_by as the search that returned it, or no token to start again"),
                        );
                        return Err(violations);
                    }
                }
            }
        };
        Ok(SearchQuery {
            filter: filter.expect("checked"),
            order,
            page_size: page_size.expect("checked"),
            after,
            binding,
        })
    }

    /// The token for the page after the one ending with sort key `last`.
    pub fn token_after(&self, last: &[SortValue]) -> String {
        self.binding.encode(last)
    }
}

impl Binding {
    fn digest(&self, payload: &[u8]) -> [u8; DIGEST_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"usersvc page token\0");
        for part in [self.filter.as_bytes(), self.order_by.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(payload);
        let mut digest = [0; DIGEST_BYTES];
        digest.copy_from_slice(&mac.finalize().into_bytes()[..DIGEST_BYTES]);
        digest
    }

    fn encode(&self, key: &[SortValue]) -> String {
        let mut payload = vec![VERSION];
        for value in key {
            match value {
                SortValue::Int(number) => {
                    payload.push(b'i');
                    payload.extend(number.to_be_bytes());
                }
                SortValue::Text(text) => {
                    payload.push(b's');
                    payload.extend((text.len() as u32).to_be_bytes());
                    payload.extend(text.as_bytes());
                }
            }
        }
        let digest = self.digest(&payload);
        payload.extend(digest);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// The key in `token`, if this binding issued it unaltered.
    fn decode(&self, token: &str) -> Option<Vec<SortValue>> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let split = bytes.len().checked_sub(DIGEST_BYTES)?;
        let (payload, digest) = bytes.split_at(split);
        // Compared in constant time, as a MAC should be.
        let expected = self.digest(payload);
        if expected
            .iter()
            .zip(digest)
            .fold(0, |differ, (a, b)| differ | (a ^ b))
            != 0
        {
            return None;
        }
        let (&version, mut rest) = payload.split_first()?;
        if version != VERSION {
            return None;
        }
        let mut key = Vec::new();
        while let Some((&tag, tail)) = rest.split_first() {
            match tag {
                b'i' => {
                    let (number, tail) = tail.split_first_chunk::<8>()?;
                    key.push(SortValue::Int(i64::from_be_bytes(*number)));
                    rest = tail;
                }
                b's' => {
                    let (len, tail) = tail.split_first_chunk::<4>()?;
                    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
                    if tail.len() < len {
                        return None;
                    }
                    let (text, tail) = tail.split_at(len);
                    let text = String::from_utf8(text.to_vec()).ok()?;
                    if text.chars().any(char::is_control) {
                        return None;
                    }
                    key.push(SortValue::Text(text));
                    rest = tail;
                }
                _ => return None,
            }
        }
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn query(filter: &str, order_by: &str, token: &str) -> Result<SearchQuery, Violations> {
        SearchQuery::parse(
            pb::SearchUsersRequest {
                filter: filter.into(),
                order_by: order_by.into(),
                page_size: 0,
                page_token: token.into(),
            },
            KEY,
        )
    }

    #[test]
    fn a_token_opens_only_the_search_that_issued_it() {
        let first = query("name:a", "name desc", "").unwrap();
        let key = vec![
            SortValue::Text("ada".into()),
            SortValue::Text("id-1".into()),
        ];
        let token = first.token_after(&key);
        let next = query("name:a", "name desc", &token).unwrap();
        assert_eq!(next.after, Some(Cursor(key)));

        assert!(query("name:b", "name desc", &token).is_err());
        assert!(query("name:a", "name", &token).is_err());
        assert!(query("name:a", "email desc", &token).is_err());
        let mut altered = token.into_bytes();
        let last = altered.len() - 5;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(query("name:a", "name desc", &altered).is_err());
        assert!(query("name:a", "name desc", "not a token!").is_err());
        // The same token under another directory's key.
        let elsewhere = SearchQuery::parse(
            pb::SearchUsersRequest {
                filter: "name:a".into(),
                order_by: "name desc".into(),
                page_token: next
                    .token_after(&[SortValue::Text("b".into()), SortValue::Text("i".into())]),
                ..Default::default()
            },
            [8; 32],
        );
        assert!(elsewhere.is_err());
        assert!(query("name:a", "name desc", "").unwrap().after.is_none());
    }

    #[test]
    fn a_token_of_the_wrong_shape_is_refused_even_if_its_digest_holds() {
        let search = query("", "created_at", "").unwrap();
        // A text where the order needs a time.
        let token =
            search.token_after(&[SortValue::Text("x".into()), SortValue::Text("id".into())]);
        assert!(query("", "created_at", &token).is_err());
    }

    #[test]
    fn page_sizes_default_and_are_capped() {
        let size = |page_size| {
            SearchQuery::parse(
                pb::SearchUsersRequest {
                    page_size,
                    ..Default::default()
                },
                KEY,
            )
            .map(|q| q.page_size)
        };
        assert_eq!(size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(size(7).unwrap(), 7);
        assert_eq!(size(5000).unwrap(), MAX_PAGE_SIZE);
        assert!(size(-1).is_err());
    }
}
