-- Every service's tables move into its own schema (mdmscep_common/service_database.py): each
-- service then connects as a role with rights on its schema alone, and new migrations live in
-- the service's own migrations folder. Tables keep their names, indexes and sequences.

CREATE SCHEMA IF NOT EXISTS admin_config;
CREATE SCHEMA IF NOT EXISTS mdm_endpoint;
CREATE SCHEMA IF NOT EXISTS profile_processor;
CREATE SCHEMA IF NOT EXISTS scep_proxy;

ALTER TABLE public.certificate_authorities SET SCHEMA admin_config;
ALTER TABLE public.profiles SET SCHEMA admin_config;
ALTER TABLE public.profile_certificate_authorities SET SCHEMA admin_config;
ALTER TABLE public.activities SET SCHEMA admin_config;
ALTER TABLE public.api_tokens SET SCHEMA admin_config;
ALTER TABLE public.admin_auth_failures SET SCHEMA admin_config;

ALTER TABLE public.hosts SET SCHEMA mdm_endpoint;
ALTER TABLE public.commands SET SCHEMA mdm_endpoint;
ALTER TABLE public.enroll_failures SET SCHEMA mdm_endpoint;

ALTER TABLE public.host_profiles SET SCHEMA profile_processor;
ALTER TABLE public.scep_codes SET SCHEMA profile_processor;
ALTER TABLE public.host_certificates SET SCHEMA profile_processor;
ALTER TABLE public.ca_pacing SET SCHEMA profile_processor;

ALTER TABLE public.ca_requests SET SCHEMA scep_proxy;
ALTER TABLE public.scep_proxy_refusals SET SCHEMA scep_proxy;
