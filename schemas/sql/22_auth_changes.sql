-- Any change to tokens or users is announced on the vo_auth channel, so every server
-- process drops the token identities it keeps in memory: a revoked token, a deactivated
-- user or a lost staff flag takes effect at once, without a lookup on every request.

CREATE OR REPLACE FUNCTION auth.announce_change() RETURNS trigger
LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_notify('vo_auth', TG_TABLE_NAME); RETURN NULL; END $$;

DROP TRIGGER IF EXISTS announce_change ON auth.tokens;
CREATE TRIGGER announce_change AFTER UPDATE OF revoked_at, token_hash, user_id OR DELETE
    ON auth.tokens
    FOR EACH STATEMENT EXECUTE FUNCTION auth.announce_change();

DROP TRIGGER IF EXISTS announce_change ON auth.users;
CREATE TRIGGER announce_change AFTER UPDATE OF is_active, is_staff, username OR DELETE
    ON auth.users
    FOR EACH STATEMENT EXECUTE FUNCTION auth.announce_change();
