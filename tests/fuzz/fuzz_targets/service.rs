//! Arbitrary bytes as each method's messages, and as its gRPC framing,
//! through the service; see `harness.rs`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use std::cell::RefCell;

thread_local! {
    static SERVICE: RefCell<harness::InProcess> = RefCell::new(harness::InProcess::new());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| SERVICE.with(|s| s.borrow_mut().call(data)));
