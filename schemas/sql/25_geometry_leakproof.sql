-- Under row-level security PostgreSQL applies a user's condition through an index only
-- when the condition's function is LEAKPROOF (it cannot reveal rows the policy hides).
-- pgsphere ships its containment and overlap predicates without that mark, so cone and
-- polygon searches by a non-staff user would scan the whole table. These predicates take
-- two well-formed geometries and return a boolean without raising errors, so they leak
-- nothing; mark them. Needs a superuser (the embedded cluster's); elsewhere the service
-- still works, only without the spatial index for queries under row-level security.
DO $$
DECLARE
  predicate regprocedure;
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE NOTICE 'not a superuser: pgsphere predicates stay non-leakproof';
    RETURN;
  END IF;
  FOR predicate IN
    SELECT DISTINCT o.oprcode::regprocedure
    FROM pg_operator AS o
    WHERE o.oprname IN ('<@', '@>', '&&')
      AND format_type(o.oprleft, NULL) IN ('spoint', 'scircle', 'spoly', 'sbox')
      AND format_type(o.oprright, NULL) IN ('spoint', 'scircle', 'spoly', 'sbox')
  LOOP
    EXECUTE format('ALTER FUNCTION %s LEAKPROOF', predicate);
  END LOOP;
END $$;
