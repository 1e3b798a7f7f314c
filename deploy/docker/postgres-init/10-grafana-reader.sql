-- The read-only role Grafana's PostgreSQL datasource logs in as (GRAFANA_PG_USER and
-- GRAFANA_PG_PASSWORD, the same variables the datasource provisioning reads).
--
-- The postgres image runs the files in /docker-entrypoint-initdb.d once, when it creates the
-- database in an empty data volume, as POSTGRES_USER on POSTGRES_DB. For a volume created
-- before this file existed, run it by hand (psql, as POSTGRES_USER, with those variables
-- set). Values come from the environment through \getenv, never from the command line.
\getenv reader GRAFANA_PG_USER
\getenv reader_password GRAFANA_PG_PASSWORD
\getenv owner POSTGRES_USER
\getenv db POSTGRES_DB

CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT 10;
ALTER ROLE :"reader" SET default_transaction_read_only = on;
ALTER ROLE :"reader" SET statement_timeout = '30s';
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
-- The tables do not exist yet: `touchpulse migrate` creates them later, as the owner.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
