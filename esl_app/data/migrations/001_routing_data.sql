-- esl-app routing data: the truth the caches serve (applied by `esl-app db migrate`).
-- Every change bumps a revision (one sequence for all) and NOTIFYs 'esl_app_data_<schema>' with
-- 'kind:rev:key', so running processes reload exactly what changed; caches keep the highest revision.
-- Functions run with the search_path they were created with, whatever the writer's session uses.

CREATE SEQUENCE esl_rev;

-- the revision of every cached object: kind 'number' (key DID), 'tenant' (key id), 'global' (key '*')
CREATE TABLE data_versions (
    kind text NOT NULL,
    key  text NOT NULL,
    rev  bigint NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE TABLE tenants (
    id       text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name     text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC',
    enabled  boolean NOT NULL DEFAULT true
);

CREATE TABLE numbers (
    did           text PRIMARY KEY CHECK (did <> '' AND did !~ '\s'),
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    target        text NOT NULL,                -- the flow or route target, e.g. 'menu' or 'user/1234'
    enabled       boolean NOT NULL DEFAULT true,
    respect_hours boolean NOT NULL DEFAULT true -- false: the tenant's business hours do not apply
);
CREATE INDEX numbers_tenant ON numbers (tenant_id);

-- caller blocklist: exact numbers and prefixes; tenant_id NULL = global (every tenant, every number)
CREATE TABLE blocklist (
    id        bigserial PRIMARY KEY,
    tenant_id text REFERENCES tenants (id) ON DELETE CASCADE,
    kind      text NOT NULL CHECK (kind IN ('exact', 'prefix')),
    pattern   text NOT NULL CHECK (pattern <> ''),
    reason    text,
    UNIQUE NULLS NOT DISTINCT (tenant_id, kind, pattern)
);

-- weekly schedule in the tenant's time zone; weekday 0 = Monday; [opens, closes); closes may be 24:00.
-- A tenant without any row is open around the clock.
CREATE TABLE business_hours (
    tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    weekday   smallint NOT NULL CHECK (weekday BETWEEN 0 AND 6),
    opens     time NOT NULL,
    closes    time NOT NULL,
    CHECK (opens < closes),
    PRIMARY KEY (tenant_id, weekday, opens)
);

-- exceptions: closed all day (opens/closes NULL) or open only between opens and closes
CREATE TABLE holidays (
    tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day       date NOT NULL,
    name      text NOT NULL DEFAULT '',
    opens     time,
    closes    time,
    CHECK ((opens IS NULL) = (closes IS NULL) AND (opens IS NULL OR opens < closes)),
    PRIMARY KEY (tenant_id, day)
);

-- NULL = no limit
CREATE TABLE tenant_limits (
    tenant_id        text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    max_concurrent   integer CHECK (max_concurrent >= 0),
    calls_per_second integer CHECK (calls_per_second >= 0)
);

CREATE FUNCTION esl_touch(p_kind text, p_key text, p_schema text) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_rev bigint := nextval('esl_rev');
BEGIN
    INSERT INTO data_versions (kind, key, rev) VALUES (p_kind, p_key, v_rev)
        ON CONFLICT (kind, key) DO UPDATE SET rev = excluded.rev;
    PERFORM pg_notify('esl_app_data_' || p_schema, p_kind || ':' || v_rev || ':' || p_key);
END $$;

CREATE FUNCTION esl_tenant_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM esl_touch('tenant', OLD.id, TG_TABLE_SCHEMA);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id) THEN
        PERFORM esl_touch('tenant', NEW.id, TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION esl_number_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM esl_touch('number', OLD.did, TG_TABLE_SCHEMA);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.did IS DISTINCT FROM OLD.did) THEN
        PERFORM esl_touch('number', NEW.did, TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END $$;

-- hours, holidays, limits and tenant blocklist rows belong to the tenant's cached object
CREATE FUNCTION esl_tenant_part_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_old text;
    v_new text;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN v_old := OLD.tenant_id; END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN v_new := NEW.tenant_id; END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF v_old IS NULL THEN
            PERFORM esl_touch('global', '*', TG_TABLE_SCHEMA);
        ELSIF EXISTS (SELECT 1 FROM tenants WHERE id = v_old) THEN
            PERFORM esl_touch('tenant', v_old, TG_TABLE_SCHEMA);
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND v_new IS DISTINCT FROM v_old) THEN
        IF v_new IS NULL THEN
            PERFORM esl_touch('global', '*', TG_TABLE_SCHEMA);
        ELSE
            PERFORM esl_touch('tenant', v_new, TG_TABLE_SCHEMA);
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- TRUNCATE: everything is reloaded
CREATE FUNCTION esl_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM esl_touch('all', '*', TG_TABLE_SCHEMA);
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION esl_tenant_changed();
CREATE TRIGGER numbers_changed AFTER INSERT OR UPDATE OR DELETE ON numbers
    FOR EACH ROW EXECUTE FUNCTION esl_number_changed();
CREATE TRIGGER blocklist_changed AFTER INSERT OR UPDATE OR DELETE ON blocklist
    FOR EACH ROW EXECUTE FUNCTION esl_tenant_part_changed();
CREATE TRIGGER business_hours_changed AFTER INSERT OR UPDATE OR DELETE ON business_hours
    FOR EACH ROW EXECUTE FUNCTION esl_tenant_part_changed();
CREATE TRIGGER holidays_changed AFTER INSERT OR UPDATE OR DELETE ON holidays
    FOR EACH ROW EXECUTE FUNCTION esl_tenant_part_changed();
CREATE TRIGGER tenant_limits_changed AFTER INSERT OR UPDATE OR DELETE ON tenant_limits
    FOR EACH ROW EXECUTE FUNCTION esl_tenant_part_changed();

CREATE TRIGGER tenants_truncated AFTER TRUNCATE ON tenants FOR EACH STATEMENT EXECUTE FUNCTION esl_truncated();
CREATE TRIGGER numbers_truncated AFTER TRUNCATE ON numbers FOR EACH STATEMENT EXECUTE FUNCTION esl_truncated();
CREATE TRIGGER blocklist_truncated AFTER TRUNCATE ON blocklist FOR EACH STATEMENT EXECUTE FUNCTION esl_truncated();
CREATE TRIGGER business_hours_truncated AFTER TRUNCATE ON business_hours
    FOR EACH STATEMENT EXECUTE FUNCTION esl_truncated();
CREATE TRIGGER holidays_truncated AFTER TRUNCATE ON holidays FOR EACH STATEMENT EXECUTE FUNCTION esl_truncated();
CREATE TRIGGER tenant_limits_truncated AFTER TRUNCATE ON tenant_limits
    FOR EACH STATEMENT EXECUTE FUNCTION esl_truncated();
