-- A role per API token (admin_config/roles.py): observer reads, maintainer also changes profiles,
-- admin does everything. Tokens made before roles were full admins and stay admins; a token made
-- from now on without a role is an observer. Applied inside the service's schema (admin_config).

ALTER TABLE api_tokens ADD COLUMN role text NOT NULL DEFAULT 'admin'
    CONSTRAINT api_tokens_role_check CHECK (role IN ('observer', 'maintainer', 'admin'));
ALTER TABLE api_tokens ALTER COLUMN role SET DEFAULT 'observer';
