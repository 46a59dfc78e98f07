//! Tenants, sites and API tokens: what HQ admins manage.

use gatehouse_protocol::SiteId;
use rand::RngCore;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    ApiToken, Micros, NewApiToken, Principal, Role, SecretHash, Site, Store, StoreError, Tenant,
    TenantId, TenantScope, check_name, id_column, is_unique_violation, new_id,
};

impl Store {
    /// Creates a tenant (a platform-admin action) and returns it with its scope.
    pub async fn create_tenant(
        &self,
        name: &str,
        now: Micros,
    ) -> Result<(Tenant, TenantScope), StoreError> {
        check_name("tenant name", name)?;
        let id = TenantId::new(new_id("ten")).map_err(|error| StoreError::Invalid {
            field: "tenant id",
            reason: error.to_string(),
        })?;
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id.as_str())
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let tenant = Tenant {
            id: id.clone(),
            name: name.to_owned(),
            created_at: now,
        };
        Ok((tenant, TenantScope::new(id)))
    }

    /// Every tenant (a platform-admin action).
    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// The scope of `tenant`, if it exists: for platform-admin actions only (the caller has
    /// checked that the actor is a platform admin).
    pub async fn admin_scope(&self, tenant: &TenantId) -> Result<Option<TenantScope>, StoreError> {
        let found = sqlx::query("SELECT id FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.map(|_| TenantScope::new(tenant.clone())))
    }

    /// The scope's tenant.
    pub async fn tenant(&self, scope: &TenantScope) -> Result<Tenant, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .bind(scope.id())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("tenant", scope.id()))?;
        tenant_from_row(&row)
    }

    pub async fn rename_tenant(&self, scope: &TenantScope, name: &str) -> Result<(), StoreError> {
        check_name("tenant name", name)?;
        let done = sqlx::query("UPDATE tenants SET name = $2 WHERE id = $1")
            .bind(scope.id())
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("tenant", scope.id()));
        }
        Ok(())
    }

    /// Deletes a tenant without sites, and its API tokens. Consumes the scope.
    pub async fn delete_tenant(&self, scope: TenantScope) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let sites: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sites WHERE tenant_id = $1")
            .bind(scope.id())
            .fetch_one(&mut *transaction)
            .await?
            .try_get("n")?;
        if sites > 0 {
            return Err(StoreError::NotEmpty {
                what: "tenant",
                id: scope.id().to_owned(),
                children: "sites",
            });
        }
        sqlx::query("DELETE FROM api_tokens WHERE tenant_id = $1")
            .bind(scope.id())
            .execute(&mut *transaction)
            .await?;
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(scope.id())
            .execute(&mut *transaction)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("tenant", scope.id()));
        }
        transaction.commit().await?;
        Ok(())
    }

    pub async fn create_site(
        &self,
        scope: &TenantScope,
        name: &str,
        now: Micros,
    ) -> Result<Site, StoreError> {
        check_name("site name", name)?;
        let id = SiteId::new(new_id("site")).map_err(|error| StoreError::Invalid {
            field: "site id",
            reason: error.to_string(),
        })?;
        sqlx::query("INSERT INTO sites (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id.as_str())
            .bind(scope.id())
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(Site {
            id,
            tenant: scope.tenant().clone(),
            name: name.to_owned(),
            created_at: now,
        })
    }

    pub async fn sites(&self, scope: &TenantScope) -> Result<Vec<Site>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, created_at FROM sites WHERE tenant_id = $1 \
             ORDER BY name, id",
        )
        .bind(scope.id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(site_from_row).collect()
    }

    pub async fn site(&self, scope: &TenantScope, id: &SiteId) -> Result<Option<Site>, StoreError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, created_at FROM sites WHERE tenant_id = $1 AND id = $2",
        )
        .bind(scope.id())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(site_from_row).transpose()
    }

    pub async fn rename_site(
        &self,
        scope: &TenantScope,
        id: &SiteId,
        name: &str,
    ) -> Result<(), StoreError> {
        check_name("site name", name)?;
        let done = sqlx::query("UPDATE sites SET name = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(scope.id())
            .bind(id.as_str())
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("site", id.as_str()));
        }
        Ok(())
    }

    /// Deletes a site without appliances.
    pub async fn delete_site(&self, scope: &TenantScope, id: &SiteId) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        let appliances: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM appliances WHERE tenant_id = $1 AND site_id = $2",
        )
        .bind(scope.id())
        .bind(id.as_str())
        .fetch_one(&mut *transaction)
        .await?
        .try_get("n")?;
        if appliances > 0 {
            return Err(StoreError::NotEmpty {
                what: "site",
                id: id.as_str().to_owned(),
                children: "appliances",
            });
        }
        let done = sqlx::query("DELETE FROM sites WHERE tenant_id = $1 AND id = $2")
            .bind(scope.id())
            .bind(id.as_str())
            .execute(&mut *transaction)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("site", id.as_str()));
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Makes an API token for the scope's tenant. Only its hash is stored; the returned
    /// plaintext is the only copy.
    pub async fn create_api_token(
        &self,
        scope: &TenantScope,
        name: &str,
        role: Role,
        now: Micros,
    ) -> Result<NewApiToken, StoreError> {
        check_name("token name", name)?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("ght_{}", hex::encode(secret));
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (token_hash, tenant_id, name, role, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(SecretHash::of_token(&token).as_str())
        .bind(scope.id())
        .bind(name)
        .bind(role.as_str())
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(NewApiToken {
                token,
                name: name.to_owned(),
                role,
            }),
            Err(error) if is_unique_violation(&error) => {
                Err(StoreError::DuplicateName(name.to_owned()))
            }
            Err(error) => Err(error.into()),
        }
    }

    pub async fn api_tokens(&self, scope: &TenantScope) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, role, created_at FROM api_tokens WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(scope.id())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ApiToken {
                    name: row.try_get("name")?,
                    role: role_column(row)?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn revoke_api_token(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE tenant_id = $1 AND name = $2")
            .bind(scope.id())
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("API token", name));
        }
        Ok(())
    }

    /// Who a presented API token speaks for, if anyone.
    pub async fn token_principal(
        &self,
        token: &SecretHash,
    ) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query("SELECT tenant_id, name, role FROM api_tokens WHERE token_hash = $1")
            .bind(token.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Principal {
            scope: TenantScope::new(id_column(&row, "tenant_id")?),
            role: role_column(&row)?,
            name: row.try_get("name")?,
        }))
    }
}

pub(super) fn not_found(what: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_owned(),
    }
}

fn tenant_from_row(row: &AnyRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: id_column(row, "id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn site_from_row(row: &AnyRow) -> Result<Site, StoreError> {
    Ok(Site {
        id: id_column(row, "id")?,
        tenant: id_column(row, "tenant_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn role_column(row: &AnyRow) -> Result<Role, StoreError> {
    let text: String = row.try_get("role")?;
    text.parse().map_err(|reason| StoreError::Corrupt {
        column: "role",
        reason,
    })
}
