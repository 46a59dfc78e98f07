//! Appliances: claim codes, certificates, health.
//!
//! A claim is one transaction ([`Store::begin_claim`], then [`PendingClaim::commit`] with the
//! certificate's fingerprint), so the code is spent only once the certificate exists; and it is
//! retryable for a while with the same key, so a lost answer does not spend it either.

use gatehouse_protocol::{ApplianceId, SiteId};
use rand::RngCore;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::sql::Sql;
use super::tenants::not_found;
use super::{
    Appliance, CLAIM_RETRY_WINDOW, Claim, Micros, NewClaim, PendingClaim, SecretHash, StatusChange,
    Store, StoreError, TenantScope, check_name, id_column, is_foreign_key_violation, new_id, to_db,
    u64_column,
};

/// The columns [`appliance_from_row`] reads.
macro_rules! appliance_columns {
    () => {
        "id, tenant_id, site_id, name, created_at, claimed_at, cert_fingerprint, online, \
         last_seen_at, offline_since, outbox_backlog, acked_seq"
    };
}

/// Crockford's base32: no I, L, O or U to misread.
const CLAIM_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl Store {
    /// Registers an appliance to be installed at `site` and makes its one-time claim code.
    /// Only the code's hash is stored; the returned plaintext is the only copy.
    pub async fn create_claim(
        &self,
        scope: &TenantScope,
        site: &SiteId,
        appliance_name: &str,
        now: Micros,
        expires_at: Micros,
    ) -> Result<NewClaim, StoreError> {
        check_name("appliance name", appliance_name)?;
        if expires_at <= now {
            return Err(StoreError::Invalid {
                field: "expires_at",
                reason: "a claim code must expire after it is made".to_owned(),
            });
        }
        let appliance = ApplianceId::new(new_id("app")).map_err(|error| StoreError::Invalid {
            field: "appliance id",
            reason: error.to_string(),
        })?;
        let code = new_claim_code();
        let mut transaction = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO appliances (id, tenant_id, site_id, name, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(appliance.as_str())
        .bind(scope.id())
        .bind(site.as_str())
        .bind(appliance_name)
        .bind(now)
        .execute(&mut *transaction)
        .await;
        match inserted {
            Ok(_) => {}
            // The composite key (tenant_id, site_id): no such site in this tenant.
            Err(error) if is_foreign_key_violation(&error) => {
                return Err(not_found("site", site.as_str()));
            }
            Err(error) => return Err(error.into()),
        }
        sqlx::query(
            "INSERT INTO claim_codes (code_hash, tenant_id, site_id, appliance_id, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(SecretHash::of_claim_code(&code).as_str())
        .bind(scope.id())
        .bind(site.as_str())
        .bind(appliance.as_str())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(NewClaim {
            code,
            appliance,
            expires_at,
        })
    }

    /// Redeems a claim code without issuing a certificate (fixtures, benchmarks, an admin
    /// marking an appliance installed): once, before it expires. Such a redemption cannot be
    /// repeated ([`Store::begin_claim`] repeats only for the key it was first redeemed for).
    pub async fn redeem_claim(&self, code: &str, now: Micros) -> Result<Claim, StoreError> {
        let mut transaction = self.begin_write().await?;
        let (claim, _) = redeem(&mut transaction, code, None, now).await?;
        transaction.commit().await?;
        Ok(claim)
    }

    /// Starts an appliance's claim: redeems `code` for the public key whose DER
    /// SubjectPublicKeyInfo hashes (SHA-256, lowercase hex) to `key_sha256`, in a transaction
    /// that [`PendingClaim::commit`] ends once the certificate is signed, so a failure before
    /// the commit leaves the code unused.
    ///
    /// A code already used is accepted again for [`CLAIM_RETRY_WINDOW`] after its first use,
    /// for the same key only (an appliance retrying after a lost answer reuses its key): the
    /// caller signs a new certificate for the same appliance. Expiry does not end that window.
    ///
    /// Refusals are [`StoreError::ClaimUnknown`], [`StoreError::ClaimUsed`] (also for another
    /// key within the window) and [`StoreError::ClaimExpired`].
    pub async fn begin_claim(
        &self,
        code: &str,
        key_sha256: &str,
        now: Micros,
    ) -> Result<PendingClaim, StoreError> {
        let mut transaction = self.begin_write().await?;
        let (claim, redemption) = redeem(&mut transaction, code, Some(key_sha256), now).await?;
        Ok(PendingClaim {
            transaction,
            claim,
            repeat: redemption == Redemption::Repeat,
        })
    }

    /// The appliances of the scope's tenant, of one site or all.
    pub async fn appliances(
        &self,
        scope: &TenantScope,
        site: Option<&SiteId>,
    ) -> Result<Vec<Appliance>, StoreError> {
        let mut sql = Sql::new(concat!(
            "SELECT ",
            appliance_columns!(),
            " FROM appliances WHERE tenant_id = "
        ));
        sql.text(scope.id());
        if let Some(site) = site {
            sql.push(" AND site_id = ").text(site.as_str());
        }
        sql.push(" ORDER BY name, id");
        let rows = sql.query().fetch_all(&self.pool).await?;
        rows.iter().map(appliance_from_row).collect()
    }

    pub async fn appliance(
        &self,
        scope: &TenantScope,
        id: &ApplianceId,
    ) -> Result<Option<Appliance>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            appliance_columns!(),
            " FROM appliances WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(scope.id())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(appliance_from_row).transpose()
    }

    /// The tenant of an appliance, for the relay itself (an appliance authenticated by its
    /// certificate, whose topics the broker's ACL restricts to its own).
    pub async fn appliance_scope(
        &self,
        appliance: &ApplianceId,
    ) -> Result<Option<TenantScope>, StoreError> {
        let row = sqlx::query("SELECT tenant_id FROM appliances WHERE id = $1")
            .bind(appliance.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(TenantScope::new(id_column(&row, "tenant_id")?)))
            .transpose()
    }

    /// Applies an appliance's status message (or its last will) sent at `at`. A message older
    /// than the last one applied changes nothing.
    pub async fn set_appliance_status(
        &self,
        appliance: &ApplianceId,
        online: bool,
        outbox_backlog: u64,
        at: Micros,
    ) -> Result<StatusChange, StoreError> {
        let backlog = to_db("outbox_backlog", outbox_backlog)?;
        let mut transaction = self.begin_write().await?;
        // Touch the row first: it is locked until commit.
        let row = sqlx::query(
            "UPDATE appliances SET acked_seq = acked_seq WHERE id = $1 \
             RETURNING online, status_at, offline_since, last_seen_at",
        )
        .bind(appliance.as_str())
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(|| StoreError::UnknownAppliance(appliance.as_str().to_owned()))?;
        let before = Health {
            online: row.try_get::<i64, _>("online")? == 1,
            status_at: row.try_get("status_at")?,
            offline_since: row.try_get("offline_since")?,
            last_seen_at: row.try_get("last_seen_at")?,
        };
        let (change, after) = before.apply(online, at);
        if change != StatusChange::Stale {
            sqlx::query(
                "UPDATE appliances SET online = $2, status_at = $3, offline_since = $4, \
                 last_seen_at = $5, outbox_backlog = $6 WHERE id = $1",
            )
            .bind(appliance.as_str())
            .bind(i64::from(after.online))
            .bind(after.status_at)
            .bind(after.offline_since)
            .bind(after.last_seen_at)
            .bind(backlog)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(change)
    }
}

impl PendingClaim {
    /// The appliance the code stands for.
    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// Whether this is a repeat of a claim already made for the same key.
    pub fn is_repeat(&self) -> bool {
        self.repeat
    }

    /// Stores the fingerprint (SHA-256 of the DER, lowercase hex) of the certificate just
    /// signed for the appliance, and commits the claim.
    pub async fn commit(mut self, cert_fingerprint: &str) -> Result<Claim, StoreError> {
        sqlx::query("UPDATE appliances SET cert_fingerprint = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(self.claim.tenant.as_str())
            .bind(self.claim.appliance.as_str())
            .bind(cert_fingerprint)
            .execute(&mut *self.transaction)
            .await?;
        self.transaction.commit().await?;
        Ok(self.claim)
    }
}

/// A claim code's row, as [`redeem`] reads it under its row lock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CodeState {
    expires_at: Micros,
    used_at: Option<Micros>,
    key_sha256: Option<String>,
}

/// What redeeming a code does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redemption {
    /// First use: mark the code used (for this key) and the appliance claimed.
    First,
    /// The same key again, within [`CLAIM_RETRY_WINDOW`] of the first use: change nothing.
    Repeat,
}

impl CodeState {
    /// The decision, free of I/O. `key` is `None` for a redemption without a certificate,
    /// which is never a repeat.
    fn redeem(&self, key: Option<&str>, now: Micros) -> Result<Redemption, StoreError> {
        match self.used_at {
            None if self.expires_at > now => Ok(Redemption::First),
            None => Err(StoreError::ClaimExpired),
            Some(used_at) => {
                let same_key = key.is_some() && self.key_sha256.as_deref() == key;
                if same_key && now.saturating_sub(used_at) <= CLAIM_RETRY_WINDOW {
                    Ok(Redemption::Repeat)
                } else {
                    Err(StoreError::ClaimUsed)
                }
            }
        }
    }
}

/// Redeems `code` inside `transaction`: locks the code's row, decides, and on a first use
/// marks the code used (with `key`) and the appliance claimed.
async fn redeem(
    transaction: &mut Transaction<'static, Any>,
    code: &str,
    key: Option<&str>,
    now: Micros,
) -> Result<(Claim, Redemption), StoreError> {
    let hash = SecretHash::of_claim_code(code);
    // Touch the row first: it is locked until commit, so of two claims with one code the
    // second sees what the first did.
    let row = sqlx::query(
        "UPDATE claim_codes SET used_at = used_at WHERE code_hash = $1 \
         RETURNING tenant_id, site_id, appliance_id, expires_at, used_at, key_sha256",
    )
    .bind(hash.as_str())
    .fetch_optional(&mut **transaction)
    .await?
    .ok_or(StoreError::ClaimUnknown)?;
    let state = CodeState {
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        key_sha256: row.try_get("key_sha256")?,
    };
    let redemption = state.redeem(key, now)?;
    let claim = Claim {
        tenant: id_column(&row, "tenant_id")?,
        site: id_column(&row, "site_id")?,
        appliance: id_column(&row, "appliance_id")?,
    };
    if redemption == Redemption::First {
        sqlx::query("UPDATE claim_codes SET used_at = $2, key_sha256 = $3 WHERE code_hash = $1")
            .bind(hash.as_str())
            .bind(now)
            .bind(key)
            .execute(&mut **transaction)
            .await?;
        sqlx::query("UPDATE appliances SET claimed_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(claim.tenant.as_str())
            .bind(claim.appliance.as_str())
            .bind(now)
            .execute(&mut **transaction)
            .await?;
    }
    Ok((claim, redemption))
}

/// The health columns of an appliance; [`Health::apply`] is the decision, free of I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Health {
    online: bool,
    status_at: Option<Micros>,
    offline_since: Option<Micros>,
    last_seen_at: Option<Micros>,
}

impl Health {
    fn apply(self, online: bool, at: Micros) -> (StatusChange, Health) {
        if self.status_at.is_some_and(|last| last > at) {
            return (StatusChange::Stale, self);
        }
        let change = match (self.online, online) {
            (false, true) => StatusChange::CameOnline,
            (true, false) => StatusChange::WentOffline,
            _ => StatusChange::Unchanged,
        };
        let after = Health {
            online,
            status_at: Some(at),
            offline_since: match change {
                _ if online => None,
                StatusChange::WentOffline => Some(at),
                _ => self.offline_since.or(Some(at)),
            },
            last_seen_at: if online { Some(at) } else { self.last_seen_at },
        };
        (change, after)
    }
}

fn appliance_from_row(row: &AnyRow) -> Result<Appliance, StoreError> {
    Ok(Appliance {
        id: id_column(row, "id")?,
        tenant: id_column(row, "tenant_id")?,
        site: id_column(row, "site_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        claimed_at: row.try_get("claimed_at")?,
        cert_fingerprint: row.try_get("cert_fingerprint")?,
        online: row.try_get::<i64, _>("online")? == 1,
        last_seen_at: row.try_get("last_seen_at")?,
        offline_since: row.try_get("offline_since")?,
        outbox_backlog: u64_column(row, "outbox_backlog")?,
        acked_seq: u64_column(row, "acked_seq")?,
    })
}

/// A new claim code, `XXXX-XXXX-XXXX-XXXX-XXXX`: 100 random bits, easy to type.
fn new_claim_code() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let mut code = String::with_capacity(24);
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 && index % 4 == 0 {
            code.push('-');
        }
        // 256 is a multiple of 32: no bias.
        code.push(char::from(CLAIM_ALPHABET[usize::from(byte % 32)]));
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_codes_are_grouped_and_typeable() {
        let code = new_claim_code();
        assert_eq!(code.len(), 24, "{code}");
        assert_eq!(code.matches('-').count(), 4, "{code}");
        assert!(
            code.chars()
                .all(|c| c == '-' || CLAIM_ALPHABET.contains(&(c as u8))),
            "{code}"
        );
        let typed = code.to_lowercase().replace('-', " ");
        assert_eq!(
            SecretHash::of_claim_code(&typed),
            SecretHash::of_claim_code(&code)
        );
    }

    #[test]
    fn a_code_is_redeemed_once_then_repeated_only_for_its_key_for_a_while() {
        let fresh = CodeState {
            expires_at: 1_000,
            used_at: None,
            key_sha256: None,
        };
        assert_eq!(fresh.redeem(Some("k1"), 999).ok(), Some(Redemption::First));
        assert_eq!(fresh.redeem(None, 999).ok(), Some(Redemption::First));
        assert!(matches!(
            fresh.redeem(Some("k1"), 1_000),
            Err(StoreError::ClaimExpired)
        ));

        let used = CodeState {
            used_at: Some(900),
            key_sha256: Some("k1".into()),
            ..fresh
        };
        let last = 900 + CLAIM_RETRY_WINDOW;
        // The same key, even past the code's expiry, until the window closes.
        assert_eq!(
            used.redeem(Some("k1"), 1_500).ok(),
            Some(Redemption::Repeat)
        );
        assert_eq!(used.redeem(Some("k1"), last).ok(), Some(Redemption::Repeat));
        for (key, at) in [(Some("k1"), last + 1), (Some("k2"), 950), (None, 950)] {
            assert!(
                matches!(used.redeem(key, at), Err(StoreError::ClaimUsed)),
                "{key:?} at {at}"
            );
        }
        // Redeemed without a key: never repeated.
        let keyless = CodeState {
            key_sha256: None,
            ..used
        };
        assert!(matches!(
            keyless.redeem(None, 950),
            Err(StoreError::ClaimUsed)
        ));
    }

    #[test]
    fn health_moves_forward_only() {
        let never = Health {
            online: false,
            status_at: None,
            offline_since: None,
            last_seen_at: None,
        };
        let (change, up) = never.apply(true, 100);
        assert_eq!(change, StatusChange::CameOnline);
        assert_eq!((up.offline_since, up.last_seen_at), (None, Some(100)));

        let (change, down) = up.apply(false, 200);
        assert_eq!(change, StatusChange::WentOffline);
        assert_eq!(
            (down.offline_since, down.last_seen_at),
            (Some(200), Some(100))
        );

        // The last will repeated: still offline since the first one.
        let (change, still) = down.apply(false, 300);
        assert_eq!(change, StatusChange::Unchanged);
        assert_eq!(still.offline_since, Some(200));

        // A delayed "online" from before going offline is ignored.
        let (change, same) = still.apply(true, 150);
        assert_eq!(change, StatusChange::Stale);
        assert_eq!(same, still);
    }
}
