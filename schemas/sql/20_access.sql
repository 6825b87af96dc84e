-- Access control in the database: who may read which row of proprietary data.
-- The requesting user's id is set per transaction by the service
-- (set_config('vo.user_id', ..., true)) before it switches to the query role; every access
-- path runs its reads that way, so ADQL, downloads, previews and job results all get
-- the answer of the same policy. :query_role is replaced by the configured role name.

CREATE OR REPLACE FUNCTION auth.current_user_id() RETURNS bigint
LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('vo.user_id', true), '')::bigint $$;

-- SECURITY DEFINER: the query role may not read auth.* itself, only learn its own rights.
CREATE OR REPLACE FUNCTION auth.my_proposals() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$ SELECT coalesce(array_agg(m.proposal_id), '{}')
   FROM auth.memberships AS m JOIN auth.users AS u USING (user_id)
   WHERE m.user_id = auth.current_user_id() AND u.is_active $$;

CREATE OR REPLACE FUNCTION auth.i_am_staff() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$ SELECT coalesce((SELECT u.is_staff AND u.is_active FROM auth.users AS u
                    WHERE u.user_id = auth.current_user_id()), false) $$;

-- Release date rule: calibrations at once (unless the proposal keeps them), everything
-- else after the proposal's proprietary period (12 months when the proposal is unknown).
CREATE OR REPLACE FUNCTION auth.release_date_for(frame_type text, observed timestamp,
                                                 proposal text) RETURNS timestamp
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$ SELECT CASE
     WHEN frame_type IN ('bias', 'flat', 'arc') AND coalesce(p.calibrations_public, true)
       THEN observed
     ELSE observed + make_interval(months => coalesce(p.proprietary_months, 12))
   END
   FROM (SELECT 1) AS one LEFT JOIN auth.proposals AS p ON p.proposal_id = proposal $$;

CREATE OR REPLACE FUNCTION auth.refresh_release_dates(proposal text) RETURNS integer
LANGUAGE sql VOLATILE AS
$$ WITH changed AS (
     UPDATE archive.frames AS f
     SET release_date = auth.release_date_for(f.frame_type, f.date_obs, f.proposal_id)
     WHERE (proposal IS NULL OR f.proposal_id = proposal) AND NOT f.release_fixed
       AND f.release_date IS DISTINCT FROM
           auth.release_date_for(f.frame_type, f.date_obs, f.proposal_id)
     RETURNING 1)
   SELECT count(*)::integer FROM changed $$;

-- Rows written before release dates existed get theirs now.
UPDATE archive.frames
SET release_date = auth.release_date_for(frame_type, date_obs, proposal_id)
WHERE release_date IS NULL AND date_obs IS NOT NULL;

ALTER TABLE archive.frames ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS released_or_member ON archive.frames;
-- Sub-selects make PostgreSQL evaluate the rights once per query, not once per row.
CREATE POLICY released_or_member ON archive.frames FOR SELECT USING (
  release_date <= (now() AT TIME ZONE 'UTC')
  OR proposal_id = ANY ((SELECT auth.my_proposals())::text[])
  OR (SELECT auth.i_am_staff())
);

REVOKE ALL ON SCHEMA auth FROM PUBLIC;
GRANT USAGE ON SCHEMA auth TO :query_role;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA auth FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.current_user_id(), auth.my_proposals(), auth.i_am_staff()
  TO :query_role;
