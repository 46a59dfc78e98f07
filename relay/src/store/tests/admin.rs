//! Tenants, sites and API tokens.

use crate::store::{Role, SecretHash, Store, StoreError};

use super::fixtures::{Fixture, T0, claimed_appliance};

on_both_backends!(
    tenants_and_sites_are_managed_by_admins,
    api_tokens_are_stored_hashed_and_name_their_tenant,
);

async fn tenants_and_sites_are_managed_by_admins(store: &Store) -> anyhow::Result<()> {
    let (tenant, scope) = store.create_tenant("Acme", T0).await?;
    assert!(tenant.id.as_str().starts_with("ten-"));
    assert_eq!(store.admin_scope(&tenant.id).await?, Some(scope.clone()));
    store.rename_tenant(&scope, "Acme Corp").await?;
    assert_eq!(store.tenant(&scope).await?.name, "Acme Corp");
    assert_eq!(
        store
            .tenants()
            .await?
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        vec!["Acme Corp"]
    );

    let lobby = store.create_site(&scope, "Lobby", T0).await?;
    let vault = store.create_site(&scope, "Vault", T0).await?;
    store.rename_site(&scope, &vault.id, "Vault B").await?;
    let names: Vec<String> = store
        .sites(&scope)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["Lobby", "Vault B"]);
    assert_eq!(
        store.site(&scope, &lobby.id).await?.map(|s| s.name),
        Some("Lobby".to_owned())
    );

    claimed_appliance(store, &scope, &lobby.id, "gate").await?;
    assert!(matches!(
        store.delete_site(&scope, &lobby.id).await,
        Err(StoreError::NotEmpty { .. })
    ));
    store.delete_site(&scope, &vault.id).await?;
    assert_eq!(store.site(&scope, &vault.id).await?, None);
    assert!(matches!(
        store.delete_site(&scope, &vault.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_tenant(scope.clone()).await,
        Err(StoreError::NotEmpty { .. })
    ));
    assert!(matches!(
        store.create_site(&scope, "  ", T0).await,
        Err(StoreError::Invalid { .. })
    ));

    let (empty, empty_scope) = store.create_tenant("Empty", T0).await?;
    store
        .create_api_token(&empty_scope, "ci", Role::Viewer, T0)
        .await?;
    store.delete_tenant(empty_scope).await?;
    assert_eq!(store.admin_scope(&empty.id).await?, None);
    Ok(())
}

async fn api_tokens_are_stored_hashed_and_name_their_tenant(store: &Store) -> anyhow::Result<()> {
    let fixture = Fixture::new(store, "acme").await?;
    let operator = store
        .create_api_token(&fixture.scope, "night shift", Role::Operator, T0)
        .await?;
    assert!(operator.token.starts_with("ght_"));

    let principal = store
        .token_principal(&SecretHash::of_token(&operator.token))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the token is not known"))?;
    assert_eq!(principal.scope, fixture.scope);
    assert_eq!(principal.role, Role::Operator);
    assert_eq!(principal.name, "night shift");

    // The plaintext is not what is stored.
    assert_eq!(
        store
            .token_principal(&SecretHash::of_token("ght_guess"))
            .await?,
        None
    );
    assert!(matches!(
        store
            .create_api_token(&fixture.scope, "night shift", Role::Admin, T0)
            .await,
        Err(StoreError::DuplicateName(_))
    ));
    let listed = store.api_tokens(&fixture.scope).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].role, Role::Operator);

    store
        .revoke_api_token(&fixture.scope, "night shift")
        .await?;
    assert_eq!(
        store
            .token_principal(&SecretHash::of_token(&operator.token))
            .await?,
        None
    );
    Ok(())
}
