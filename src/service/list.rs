//! ListUsers' response stream: the store read a page at a time, on demand.
//!
//! The next page is fetched only when the previous one has been sent, so a
//! slow client holds at most one page in memory, and a client that goes away
//! drops the stream and with it any further reads. A server shutting down
//! ends the stream with UNAVAILABLE rather than finishing a long listing.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use futures_util::stream::{self, Stream};
use tokio::sync::watch;
use tonic::Status;

use crate::domain::{ListQuery, User};
use crate::error::Error;
use crate::pb;
use crate::store::{Cursor, PageQuery, UserStore};

pub type UserStream = Pin<Box<dyn Stream<Item = Result<pb::Outgoing<pb::User>, Status>> + Send>>;

struct Listing {
    store: Arc<dyn UserStore>,
    stopping: watch::Receiver<bool>,
    query: ListQuery,
    page_size: usize,
    /// The page being sent.
    page: std::vec::IntoIter<Arc<User>>,
    /// Where the next page starts; `None` before the first page.
    after: Option<Cursor>,
    /// Users still to send; `None` when unlimited.
    remaining: Option<u64>,
    /// No more pages: the last was short, or the stream failed or stopped.
    finished: bool,
}

impl Listing {
    /// The next user, fetching a page when the last one is used up.
    async fn next(&mut self) -> Option<Result<Arc<User>, Error>> {
        loop {
            if *self.stopping.borrow() {
                return self.fail(Error::ShuttingDown);
            }
            if let Some(user) = self.page.next() {
                return Some(Ok(user));
            }
            if self.finished {
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
                filter: self.query.filter.clone(),
                order: self.query.order.clone(),
                after: self.after.clone(),
                skip: if self.after.is_none() {
                    self.query.offset
                } else {
                    0
                },
                limit,
            };
            let page = match self.store.list_page(query).await {
                Ok(page) => page,
                Err(error) => return self.fail(error.into()),
            };
            // A short page is the last one.
            self.finished = page.users.len() < limit || page.next.is_none();
            self.after = page.next;
            if let Some(remaining) = &mut self.remaining {
                *remaining -= page.users.len() as u64;
            }
            self.page = page.users.into_iter();
        }
    }

    /// Ends the stream with `error`, once.
    fn fail(&mut self, error: Error) -> Option<Result<Arc<User>, Error>> {
        if self.finished && self.page.len() == 0 {
            return None;
        }
        self.finished = true;
        self.page = Vec::new().into_iter();
        Some(Err(error))
    }
}

/// The stream of users matching `query`, in creation order.
pub fn stream(
    store: Arc<dyn UserStore>,
    query: ListQuery,
    page_size: usize,
    stopping: watch::Receiver<bool>,
) -> UserStream {
    let listing = Listing {
        remaining: query.limit,
        store,
        stopping,
        query,
        page_size: page_size.max(1),
        page: Vec::new().into_iter(),
        after: None,
        finished: false,
    };
    Box::pin(stream::unfold(listing, |mut listing| async move {
        let item = listing.next().await?;
        // Each user encoded straight from the stored one: no copy of its
        // fields made, converted and freed, as a `pb::User` would be.
        let item = item.map(|user| pb::Outgoing::Encoded(Bytes::from(user.encode_wire())));
        Some((item.map_err(Status::from), listing))
    }))
}
