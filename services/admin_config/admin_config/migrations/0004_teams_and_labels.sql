-- Teams, labels and profile scopes (Fleet's shapes): a host is in at most one team (none until an
-- admin transfers it); a label is manual (its hosts listed here) or dynamic (criteria over host
-- facts, mdmscep_common/label_criteria.py, evaluated by the profile-processor); a profile is for
-- the hosts of its team (none: hosts with no team) that satisfy its label rule. Hosts are
-- mdm-endpoint's: host_uuid is a plain text here, checked through HostRegistry when set. Applied
-- inside the service's schema (admin_config).

CREATE TABLE teams (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A host without a row is in no team.
CREATE TABLE host_teams (
    host_uuid  text PRIMARY KEY,
    team_id    bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE
);
CREATE INDEX host_teams_team_idx ON host_teams (team_id);

CREATE TABLE labels (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    -- NULL: a manual label (label_hosts); else the dynamic label's criteria.
    criteria    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE label_hosts (
    label_id   bigint NOT NULL REFERENCES labels (id) ON DELETE CASCADE,
    host_uuid  text NOT NULL,
    PRIMARY KEY (label_id, host_uuid)
);
CREATE INDEX label_hosts_host_idx ON label_hosts (host_uuid);

ALTER TABLE profiles ADD COLUMN team_id bigint REFERENCES teams (id);
-- A PayloadIdentifier is unique within a team (and among profiles of no team), as in Fleet.
ALTER TABLE profiles DROP CONSTRAINT profiles_identifier_key;
CREATE UNIQUE INDEX profiles_team_identifier_idx ON profiles ((COALESCE(team_id, 0)), identifier);
CREATE INDEX profiles_team_idx ON profiles (team_id);

-- A profile's label rule: include_all, include_any (at most one of the two) and exclude_any.
-- A label a profile names cannot be deleted (no cascade): the API answers 409 first.
CREATE TABLE profile_labels (
    profile_uuid  text NOT NULL REFERENCES profiles (uuid) ON DELETE CASCADE,
    label_id      bigint NOT NULL REFERENCES labels (id),
    mode          text NOT NULL
        CONSTRAINT profile_labels_mode_check CHECK (mode IN ('include_all', 'include_any', 'exclude_any')),
    PRIMARY KEY (profile_uuid, label_id)
);
CREATE INDEX profile_labels_label_idx ON profile_labels (label_id);
