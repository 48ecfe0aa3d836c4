//! Incident response from the control plane: revoking a municipality's API tokens
//! and disabling a staff account, with the municipality suspended meanwhile.

use madoguchi::catalog::TenantState;
use madoguchi::control::tenant_admin;
use madoguchi::tenant::staff::Role;

use crate::forms::{get, staff};
use crate::harness::{unique, url, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_revoke_tokens_and_disable_accounts_in_an_incident() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("inc"), "千代田区", "131016").await;
    let server = env.serve().await;
    let host = t.hosts[0].as_str();
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let member = staff(&env, &server, &t, Role::Staff, Some("総務課")).await;
    let token = tenant_admin::api_token(
        &env.platform,
        &t,
        "基幹連携",
        &["forms:read".into()],
        &madoguchi::tenant::api::tokens::TokenNetwork::Admin,
    )
    .await
    .unwrap();
    let api = || async {
        // The front tier learns of a state change within a moment.
        let mut status = 0;
        for _ in 0..50 {
            status = crate::forms::browser(&server, &[host])
                .get(url(&server, host, "/api/v1/forms"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if status != 503 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        status
    };
    assert_eq!(api().await, 200);

    // The municipality is suspended first; the commands work on it as it is.
    let suspend = |from: TenantState, to: TenantState| {
        let (env, t) = (&env, &t);
        async move {
            tenant_admin::move_state(&env.platform, t, &[from], to)
                .await
                .unwrap()
        }
    };
    assert!(suspend(TenantState::Active, TenantState::Suspended).await);
    assert_eq!(
        tenant_admin::revoke_api_tokens(&env.platform, &t)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        tenant_admin::revoke_api_tokens(&env.platform, &t)
            .await
            .unwrap(),
        0
    );
    let upper = member.email.to_uppercase();
    // The address as sign-in reads it (case, full-width letters).
    let typed: String = upper
        .chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 + 0xFEE0).unwrap(),
            other => other,
        })
        .collect();
    let done = tenant_admin::disable_staff(&env.platform, &t, &typed)
        .await
        .unwrap();
    assert!(done.changed && done.admins_left == 1, "{done:?}");
    assert!(
        !tenant_admin::disable_staff(&env.platform, &t, &member.email)
            .await
            .unwrap()
            .changed
    );
    let unknown = tenant_admin::disable_staff(&env.platform, &t, "nobody@city.example.jp")
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("no staff account"),
        "{unknown}"
    );
    assert!(suspend(TenantState::Suspended, TenantState::Active).await);

    // Back online: the token is refused, the account's session is gone, and others
    // are untouched.
    assert_eq!(api().await, 401);
    let (status, loc, _) = get(&member.client, &url(&server, host, "/admin/forms")).await;
    assert_eq!(status, 303);
    assert!(loc.contains("/admin/login"), "{loc}");
    let (status, _, _) = get(&admin.client, &url(&server, host, "/admin/forms")).await;
    assert_eq!(status, 200);
    // Even the last administrator, who must then be made anew with add-staff.
    let last = tenant_admin::disable_staff(&env.platform, &t, &admin.email)
        .await
        .unwrap();
    assert_eq!(last.admins_left, 0);

    // Its password and TOTP secret are gone: enabled again, it needs a new setup link.
    let db = env.tenant_conn(&t).await.client;
    let cleared: bool = db
        .query_one(
            "SELECT password_hash IS NULL AND totp_secret IS NULL AND NOT totp_enabled FROM staff WHERE email = $1",
            &[&member.email],
        )
        .await
        .unwrap()
        .get(0);
    assert!(cleared);

    // In the municipality's operation log, as the operator's.
    let logged = crate::forms::log_rows(
        &db,
        "SELECT actor, action, detail FROM audit_log WHERE detail LIKE '%\"incident\":true%' ORDER BY seq",
    )
    .await;
    let actions: Vec<&str> = logged.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "api_token.revoke",
            "staff.update",
            "staff.update",
            "staff.update"
        ]
    );
    assert!(
        logged.iter().all(|(actor, _, _)| actor == "operator"),
        "{logged:?}"
    );
    server.shutdown().await;
}
