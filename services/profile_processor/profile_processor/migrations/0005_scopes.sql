-- Scopes (profile_processor/scopes.py): which hosts a profile is for. The processor's copies of
-- what admin-config owns (a profile's team and label rule, the labels, each host's team) and of
-- the host facts mdm-endpoint keeps (what dynamic labels are evaluated over), with the label
-- memberships the processor derives from them. Only events change them (read_models.py).
-- Applied inside the service's schema (profile_processor).

-- NULL: the profile is for hosts with no team.
ALTER TABLE known_profiles ADD COLUMN team_id bigint;
-- Whether the profile has labels_include_any labels (a host needs one of them).
ALTER TABLE known_profiles ADD COLUMN includes_any boolean NOT NULL DEFAULT false;
-- Whether its copy reads a host fact that can change ($FLEET_VAR_HOST_HARDWARE_SERIAL,
-- $FLEET_VAR_HOST_PLATFORM): a change re-sends it to that host.
ALTER TABLE known_profiles ADD COLUMN uses_host_facts boolean NOT NULL DEFAULT false;

CREATE TABLE known_profile_labels (
    profile_uuid  text NOT NULL REFERENCES known_profiles (uuid) ON DELETE CASCADE,
    label_id      bigint NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('include_all', 'include_any', 'exclude_any')),
    PRIMARY KEY (profile_uuid, label_id)
);

-- criteria NULL: a manual label (its hosts in label_memberships as admin-config listed them).
CREATE TABLE known_labels (
    id        bigint PRIMARY KEY,
    name      text NOT NULL,
    criteria  jsonb
);

-- A host with no row has no team.
CREATE TABLE known_host_teams (
    host_uuid  text PRIMARY KEY,
    team_id    bigint NOT NULL
);

CREATE TABLE known_host_facts (
    host_uuid      text PRIMARY KEY,
    serial_number  text NOT NULL DEFAULT '',
    model          text NOT NULL DEFAULT '',
    os_version     text NOT NULL DEFAULT '',
    product_name   text NOT NULL DEFAULT '',
    platform       text NOT NULL DEFAULT ''
);

-- The hosts in each label: a manual label's list, a dynamic label's hosts whose facts match.
CREATE TABLE label_memberships (
    label_id   bigint NOT NULL,
    host_uuid  text NOT NULL,
    PRIMARY KEY (label_id, host_uuid)
);
CREATE INDEX label_memberships_host_idx ON label_memberships (host_uuid);

INSERT INTO known_host_facts (host_uuid, serial_number, model, os_version, product_name, platform)
    SELECT uuid, COALESCE(serial_number, ''), COALESCE(model, ''), COALESCE(os_version, ''),
           COALESCE(product_name, ''),
           CASE WHEN starts_with(COALESCE(product_name, ''), 'Mac')
                  OR starts_with(COALESCE(product_name, ''), 'iMac')
                  OR starts_with(COALESCE(product_name, ''), 'VirtualMac') THEN 'darwin'
                WHEN starts_with(COALESCE(product_name, ''), 'iPhone')
                  OR starts_with(COALESCE(product_name, ''), 'iPod') THEN 'ios'
                WHEN starts_with(COALESCE(product_name, ''), 'iPad') THEN 'ipados'
                ELSE '' END
    FROM mdm_endpoint.hosts;
