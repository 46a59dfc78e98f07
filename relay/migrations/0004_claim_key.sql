-- A claim is retryable: the SHA-256 of the public key (its DER SubjectPublicKeyInfo) the code
-- was first redeemed for. The same code and the same key within a few minutes of that use get
-- a certificate again (the first answer was lost, or the appliance refused it); any other key
-- is refused as for a used code. NULL for codes redeemed without a certificate, which are not
-- retryable. Same rules as 0001: TEXT and BIGINT only.
ALTER TABLE claim_codes ADD COLUMN key_sha256 TEXT;
