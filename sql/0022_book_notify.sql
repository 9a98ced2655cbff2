-- 0022 the rating book follows imports: every statement that changes gm.rate_cards or
-- gm.contracts NOTIFYs the channel gm_book (delivered at COMMIT, never for a rolled-back
-- transaction). The rater and its GPU window consumer LISTEN on their PostgreSQL connections
-- and reload the book before their next batch (rater/book_watch.c); --reload-s stays as a
-- fallback. docs/rating.md, "When an import takes effect".

SET ROLE gm_owner;

CREATE FUNCTION gm.book_notify() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, gm AS $$
BEGIN
    PERFORM pg_notify('gm_book', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER rate_cards_book_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON gm.rate_cards FOR EACH STATEMENT EXECUTE FUNCTION gm.book_notify();
CREATE TRIGGER contracts_book_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON gm.contracts FOR EACH STATEMENT EXECUTE FUNCTION gm.book_notify();

RESET ROLE;
