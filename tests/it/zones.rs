//! Network zones (LGWAN and internet): citizens' forms published to one zone only,
//! and the admin screen limited to zones and address ranges, with refusals logged.

use madoguchi::front::{Listeners, Server};
use madoguchi::tenant::staff::Role;

use crate::forms::{capture, get, post, staff};
use crate::harness::{admin_client, unique, TestEnv};

async fn get_on(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A server with an LGWAN listener beside the internet's, on free ports.
async fn serve_with_lgwan(env: &TestEnv) -> Server {
    let any = "127.0.0.1:0".parse().unwrap();
    Server::start_with(
        &env.platform,
        Listeners {
            public: any,
            ops: any,
            tls: None,
            lgwan: Some(any),
        },
    )
    .await
    .unwrap()
}

/// The sample form (粗大ごみ), published to both zones; its public path.
async fn sample_form(env: &TestEnv, t: &madoguchi::catalog::TenantRecord) -> String {
    madoguchi::control::tenant_admin::import_form(
        &env.platform,
        t,
        include_str!("../../src/control/samples/bulky-waste.json"),
        "総務課",
        true,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_and_the_admin_screen_per_zone() {
    let env = TestEnv::new().await;
    let t = env.tenant(&unique("zone"), "千代田区", "131016").await;
    let host = t.hosts[0].clone();
    // A form for LGWAN only, and one for both.
    let lgwan_only = include_str!("../../src/control/samples/bulky-waste.json").replacen(
        "\"settings\": {",
        "\"settings\": { \"zones\": [\"lgwan\"],",
        1,
    );
    assert!(
        lgwan_only.contains("\"zones\""),
        "the sample has a settings object"
    );
    let p_lgwan = madoguchi::control::tenant_admin::import_form(
        &env.platform,
        &t,
        &lgwan_only,
        "総務課",
        true,
    )
    .await
    .unwrap();
    let p_both = sample_form(&env, &t).await;
    let server = serve_with_lgwan(&env).await;
    let (internet, lgwan) = (server.bound.public, server.bound.lgwan.unwrap());
    assert_eq!(get_on(internet, &host, &p_lgwan).await.0, 404);
    assert_eq!(get_on(lgwan, &host, &p_lgwan).await.0, 200);
    assert_eq!(get_on(internet, &host, &p_both).await.0, 200);
    assert_eq!(get_on(lgwan, &host, &p_both).await.0, 200);
    let home = get_on(internet, &host, "/").await.1;
    assert!(home.contains(&p_both) && !home.contains(&p_lgwan), "{home}");
    assert!(get_on(lgwan, &host, "/").await.1.contains(&p_lgwan));

    // The admin screen: by default from anywhere.
    assert_eq!(get_on(internet, &host, "/admin/login").await.0, 200);
    let db = admin_client(&t.database).await;
    db.execute("UPDATE settings SET admin_zones = '{lgwan}'", &[])
        .await
        .unwrap();
    // A setup link opened from where the admin screen is closed: its token is a
    // secret, and the refusal's log entry must not keep it.
    let token = "0123456789abcdefSECRETTOKEN0123456789";
    assert_eq!(
        get_on(internet, &host, &format!("/admin/setup/{token}"))
            .await
            .0,
        403
    );
    let (status, page) = get_on(internet, &host, "/admin/login").await;
    assert_eq!(status, 403);
    assert!(
        page.contains("このネットワークからは利用できません"),
        "{page}"
    );
    // The staff manual with the rest of the admin screen; the citizens' guide stays.
    assert_eq!(get_on(internet, &host, "/admin/help").await.0, 403);
    assert_eq!(get_on(internet, &host, "/help").await.0, 200);
    get_on(internet, &host, "/admin/forms").await;
    assert_eq!(get_on(lgwan, &host, "/admin/login").await.0, 200);
    // Refusals are logged, once a minute per address.
    let refused: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'access.refused'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refused, 1);
    let kept: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_log WHERE target LIKE '%SECRETTOKEN%' OR detail::text LIKE '%SECRETTOKEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0, "a setup token was kept in the operation log");
    // Address ranges.
    db.execute(
        "UPDATE settings SET admin_zones = '{internet,lgwan}', admin_cidrs = '{10.0.0.0/8}'",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(get_on(internet, &host, "/admin/login").await.0, 403);
    // Every administrator shut out (the office's address changed): the operator
    // opens it again, and the operation log says so.
    madoguchi::control::tenant_admin::reset_access(&env.platform, &t)
        .await
        .unwrap();
    assert_eq!(get_on(internet, &host, "/admin/login").await.0, 200);
    let reset: String = db
        .query_one(
            "SELECT detail FROM audit_log WHERE action = 'access.reset' AND actor = 'operator'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reset.contains("10.0.0.0/8"), "{reset}");

    // The administrator sets it on the screen, and cannot lock themselves out.
    let admin = staff(&env, &server, &t, Role::Admin, None).await;
    let u = |p: &str| format!("http://{host}:{}{p}", internet.port());
    let (status, _, page) = get(&admin.client, &u("/admin/access")).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("127.0.0.1"),
        "shows the current address: {page}"
    );
    let csrf = capture(r#"name="csrf" value="([^"]+)""#, &page);
    let (status, _, page) = post(
        &admin.client,
        &u("/admin/access"),
        &[
            ("csrf", &csrf),
            ("zone", "internet"),
            ("cidrs", "10.0.0.0/8"),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(page.contains("あなた"), "{page}");
    let (status, _, page) = post(
        &admin.client,
        &u("/admin/access"),
        &[
            ("csrf", &csrf),
            ("zone", "internet"),
            ("cidrs", "not an address"),
        ],
    )
    .await;
    assert_eq!(status, 422, "{page}");
    let (status, loc, _) = post(
        &admin.client,
        &u("/admin/access"),
        &[
            ("csrf", &csrf),
            ("zone", "internet"),
            ("zone", "lgwan"),
            ("cidrs", "127.0.0.0/8\n１９２.０.２.０/２４"),
        ],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/admin/access"));
    let cidrs: Vec<String> = db
        .query_one("SELECT admin_cidrs FROM settings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        cidrs,
        ["127.0.0.0/8", "192.0.2.0/24"],
        "full-width digits normalised"
    );
    server.shutdown().await;
}

/// Over LGWAN a whole city hall reaches the service from one address (an internal
/// survey answered by all its staff at once): citizens' form posts are not limited
/// per address there unless the operator says so, while over the internet they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_posts_over_lgwan_are_not_limited_per_address_by_default() {
    let run = |lgwan_per_minute: u32| async move {
        let env = TestEnv::with(|s| {
            s.limits.submit_per_minute = 1;
            s.limits.submit_burst = 3;
            s.limits.lgwan_submit_per_minute = lgwan_per_minute;
        })
        .await;
        let t = env.tenant(&unique("lgpost"), "千代田区", "131016").await;
        let public = sample_form(&env, &t).await;
        let server = serve_with_lgwan(&env).await;
        let limited_after = |addr: std::net::SocketAddr| {
            let (host, public) = (t.hosts[0].clone(), public.clone());
            async move {
                let c = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap();
                for n in 0..12 {
                    let status = c
                        .post(format!("http://{addr}{public}"))
                        .header("host", &host)
                        .header("origin", format!("http://{host}"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body("_page=0")
                        .send()
                        .await
                        .unwrap()
                        .status();
                    if status == 429 {
                        return Some(n);
                    }
                }
                None
            }
        };
        let internet = limited_after(server.bound.public).await;
        let lgwan = limited_after(server.bound.lgwan.unwrap()).await;
        server.shutdown().await;
        (internet, lgwan)
    };
    assert_eq!(run(0).await, (Some(3), None));
    // The operator may set one for LGWAN too.
    assert_eq!(run(1).await, (Some(3), Some(3)));
}
