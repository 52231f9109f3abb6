//! `devices::assign_name`: a device keeps the name it has under a profile, whoever asks, and a
//! name held by another device of the tenant is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Connection;
use uuid::Uuid;

#[tokio::test]
async fn a_device_keeps_its_name_and_names_stay_unique() {
    let options = unbox_db::testing::fresh_database().await;
    let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let tenant = Uuid::now_v7();
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let (profile, other_profile) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO tenants (id, display_name, domain) VALUES ($1, 'T', 't.example')")
        .bind(tenant)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO devices (tenant_id, id, serial_number, os_type, identity)
         SELECT $1, d, 'SN-' || d, 'Windows', '{}'::jsonb FROM unnest($2::uuid[]) AS d",
    )
    .bind(tenant)
    .bind(vec![first, second])
    .execute(&mut conn)
    .await
    .unwrap();

    let assign = async |conn: &mut sqlx::PgConnection, device, name: &str, profile| {
        unbox_db::devices::assign_name(conn, tenant, device, name, profile)
            .await
            .unwrap()
    };
    assert_eq!(
        assign(&mut conn, first, "PC-1", profile).await.as_deref(),
        Some("PC-1")
    );
    // Asked again with another candidate (an instance that thought it unnamed): the same name.
    assert_eq!(
        assign(&mut conn, first, "PC-9", profile).await.as_deref(),
        Some("PC-1")
    );
    // Taken by the first device, in any case: refused, and nothing changes.
    assert_eq!(assign(&mut conn, second, "pc-1", profile).await, None);
    let second_name: Option<String> =
        sqlx::query_scalar("SELECT assigned_name FROM devices WHERE id = $1")
            .bind(second)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(second_name, None);
    // Under another profile the device is named anew.
    assert_eq!(
        assign(&mut conn, first, "PC-2", other_profile)
            .await
            .as_deref(),
        Some("PC-2")
    );
}
