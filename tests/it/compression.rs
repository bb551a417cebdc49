//! Compression: gzip and zstd are accepted, and used for responses when the
//! client accepts them.

use crate::support::{create_request, with_token};
use tonic::codec::CompressionEncoding;
use usersvc::domain::Role;
use usersvc::pb::{self, UserRole};

#[tokio::test]
async fn gzip_and_zstd_both_ways() {
    let app = crate::support::spawn_app().await;
    let mut ids = Vec::new();
    for (encoding, name) in [
        (CompressionEncoding::Gzip, "gzip"),
        (CompressionEncoding::Zstd, "zstd"),
    ] {
        let mut client = app
            .raw()
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let mut request =
            create_request("Squeezed", &format!("{name}@example.com"), UserRole::Viewer);
        request.bio = Some("compressible ".repeat(100));
        let created = client
            .create_user(with_token(request, &crate::support::token(Role::Admin)))
            .await
            .unwrap();
        assert_eq!(created.metadata().get("grpc-encoding").unwrap(), name);
        let user = created.into_inner();

        let fetched = client
            .get_user(pb::GetUserRequest {
                user_id: user.id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(fetched.metadata().get("grpc-encoding").unwrap(), name);
        assert_eq!(fetched.into_inner().user.unwrap(), user);
        ids.push(user.id);
    }
    // A client that accepts nothing compressed gets plain responses.
    for id in ids {
        let plain = app
            .raw()
            .get_user(pb::GetUserRequest { user_id: id })
            .await
            .unwrap();
        assert!(plain.metadata().get("grpc-encoding").is_none());
    }
}
