-- Access tokens carry the credentials version they were issued under; a password change
-- bumps it, so every token issued before the change stops working (see src/auth/sessions.rs).
ALTER TABLE users ADD COLUMN credentials_version integer NOT NULL DEFAULT 0;
