//! ListUsers' response stream: the store read a page at a time, on demand.
//!
//! The next page is fetched only when the previous one has been sent, so a
//! slow client holds at most one page in memory, and a client that goes away
//! drops the stream and with it any further reads.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{self, Stream};
use tonic::Status;

use crate::domain::{ListQuery, User};
use crate::error::Error;
use crate::pb;
use crate::store::{Cursor, PageQuery, UserStore};

pub type UserStream = Pin<Box<dyn Stream<Item = Result<pb::User, Status>> + Send>>;

struct Listing {
    store: Arc<dyn UserStore>,
    query: ListQuery,
    page_size: usize,
    /// The page being sent.
    page: std::vec::IntoIter<User>,
    /// Where the next page starts; `None` once the last page was fetched.
    after: Option<Cursor>,
    /// Users still to send; `None` when unlimited.
    remaining: Option<u64>,
    first: bool,
}

impl Listing {
    /// The next user, fetching a page when the last one is used up.
    async fn next(&mut self) -> Option<Result<User, Error>> {
        loop {
            if let Some(user) = self.page.next() {
                return Some(Ok(user));
            }
            if !self.first && self.after.is_none() {
                return None;
            }
            let limit = match self.remaining {
                Some(0) => return None,
                Some(left) => usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(self.page_size),
                None => self.page_size,
            };
            let query = PageQuery {
                role: self.query.role,
                after: self.after,
                skip: if self.first { self.query.offset } else { 0 },
                limit,
            };
            self.first = false;
            let page = match self.store.list_page(query).await {
                Ok(page) => page,
                Err(error) => {
                    self.after = None;
                    return Some(Err(error.into()));
                }
            };
            // A short page is the last one.
            self.after = page.next.filter(|_| page.users.len() == limit);
            if let Some(remaining) = &mut self.remaining {
                *remaining -= page.users.len() as u64;
            }
            self.page = page.users.into_iter();
        }
    }
}

/// The stream of users matching `query`, in creation order.
pub fn stream(store: Arc<dyn UserStore>, query: ListQuery, page_size: usize) -> UserStream {
    let listing = Listing {
        remaining: query.limit,
        store,
        query,
        page_size: page_size.max(1),
        page: Vec::new().into_iter(),
        after: None,
        first: true,
    };
    Box::pin(stream::unfold(listing, |mut listing| async move {
        let item = listing.next().await?;
        Some((item.map(pb::User::from).map_err(Status::from), listing))
    }))
}
