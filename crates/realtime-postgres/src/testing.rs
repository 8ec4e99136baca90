//! Test support (feature `test-util`): a scratch database per test, dropped afterwards, so
//! that tests run in parallel and leave nothing behind.

use tokio_postgres::NoTls;

/// A database made for one test; dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

/// The server tests use: `REALTIME_TEST_POSTGRES_URL`, else the local default.
pub fn admin_url() -> String {
    std::env::var("REALTIME_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl ScratchDatabase {
    /// Creates `rt_test_<random>` on the admin URL's server.
    ///
    /// # Panics
    /// When PostgreSQL is not reachable: tests that need it should fail loudly.
    pub async fn create() -> Self {
        let admin_url = admin_url();
        let name = format!("rt_test_{}", realtime::random_hex(6));
        let (client, conn) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is needed: {e}"));
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        drop(client);
        let _ = driver.await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        ScratchDatabase {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Dropped from sync code, perhaps inside a runtime: do it on a thread of its own.
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
