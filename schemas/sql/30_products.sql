-- Access control for reduced products, their provenance and the reduction status: the
-- rule of the raw frames (20_access.sql), so a product never shows what its science
-- frame hides. Idempotent; :query_role is replaced by the configured role name.

-- Master calibrations are calibrations, everything else is science data; a release date
-- set by hand on the science frame (an embargo, an early release) carries over.
CREATE OR REPLACE FUNCTION auth.product_release_date(kind text, observed timestamp,
                                                    proposal text, frame bigint)
RETURNS timestamp
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$ SELECT CASE WHEN f.release_fixed THEN f.release_date
     ELSE auth.release_date_for(
       CASE kind WHEN 'master_bias' THEN 'bias' WHEN 'master_flat' THEN 'flat'
                 WHEN 'master_arc' THEN 'arc' ELSE 'science' END,
       observed, proposal)
   END
   FROM (SELECT 1) AS one LEFT JOIN archive.frames AS f ON f.frame_id = frame $$;

-- NULL arguments mean "any": (code, NULL) refreshes a proposal, (NULL, id) one frame's.
CREATE OR REPLACE FUNCTION auth.refresh_product_release_dates(proposal text, frame bigint)
RETURNS integer
LANGUAGE sql VOLATILE AS
$$ WITH changed AS (
     UPDATE archive.products AS p
     SET release_date = auth.product_release_date(p.kind, p.date_obs, p.proposal_id, p.frame_id)
     WHERE (proposal IS NULL OR p.proposal_id = proposal)
       AND (frame IS NULL OR p.frame_id = frame) AND NOT p.release_fixed
       AND p.release_date IS DISTINCT FROM
           auth.product_release_date(p.kind, p.date_obs, p.proposal_id, p.frame_id)
     RETURNING 1)
   SELECT count(*)::integer FROM changed $$;

-- Products follow without every caller having to remember them: a proposal's period
-- changing, or a frame's release date set (or unset) by hand, moves them at once.
CREATE OR REPLACE FUNCTION auth.products_follow_proposal() RETURNS trigger
LANGUAGE plpgsql AS
$$ BEGIN
     PERFORM auth.refresh_product_release_dates(NEW.proposal_id, NULL);
     RETURN NULL;
   END $$;

DROP TRIGGER IF EXISTS products_follow_proposal ON auth.proposals;
CREATE TRIGGER products_follow_proposal
  AFTER INSERT OR UPDATE OF proprietary_months, calibrations_public ON auth.proposals
  FOR EACH ROW EXECUTE FUNCTION auth.products_follow_proposal();

CREATE OR REPLACE FUNCTION auth.products_follow_frame() RETURNS trigger
LANGUAGE plpgsql AS
$$ BEGIN
     PERFORM auth.refresh_product_release_dates(NULL, NEW.frame_id);
     RETURN NULL;
   END $$;

DROP TRIGGER IF EXISTS products_follow_frame ON archive.frames;
CREATE TRIGGER products_follow_frame
  AFTER UPDATE OF release_date, release_fixed ON archive.frames
  FOR EACH ROW WHEN (NEW.release_fixed OR OLD.release_fixed)
  EXECUTE FUNCTION auth.products_follow_frame();

ALTER TABLE archive.products ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS released_or_member ON archive.products;
CREATE POLICY released_or_member ON archive.products FOR SELECT USING (
  release_date <= (now() AT TIME ZONE 'UTC')
  OR proposal_id = ANY ((SELECT auth.my_proposals())::text[])
  OR (SELECT auth.i_am_staff())
);

-- Provenance and status rows name products and frames: visible exactly when those are
-- (the sub-selects run under the products' and frames' own policies).
ALTER TABLE archive.provenance ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS product_visible ON archive.provenance;
CREATE POLICY product_visible ON archive.provenance FOR SELECT USING (
  EXISTS (SELECT 1 FROM archive.products AS p WHERE p.product_id = provenance.product_id)
);

ALTER TABLE archive.reduction_status ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS frame_visible ON archive.reduction_status;
CREATE POLICY frame_visible ON archive.reduction_status FOR SELECT USING (
  EXISTS (SELECT 1 FROM archive.frames AS f WHERE f.frame_id = reduction_status.frame_id)
);

REVOKE ALL ON FUNCTION auth.product_release_date(text, timestamp, text, bigint),
  auth.refresh_product_release_dates(text, bigint), auth.products_follow_proposal(),
  auth.products_follow_frame() FROM PUBLIC;
