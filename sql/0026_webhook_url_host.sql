-- 0026 webhook endpoint URLs: the scheme is case-insensitive and a host is required. Before,
-- CHECK (url ~ '^https?://') accepted 'http://' (no host) and refused 'HTTP://x'. The
-- deliverer parses every URL with libcurl's URL API (curl_url: scheme http or https, a host)
-- before it sends (webhook/webhook.c); this CHECK is the same rule for what SQL may store.
-- NOT VALID: a row stored before stays (the deliverer refuses to send to it, saying why).

SET ROLE gm_owner;

ALTER TABLE gm.webhook_endpoints DROP CONSTRAINT webhook_endpoints_url_check;
ALTER TABLE gm.webhook_endpoints ADD CONSTRAINT webhook_endpoints_url_check
    CHECK (url ~* '^https?://([^/?#@]*@)?([^/?#@:\[]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?([/?#]|$)')
    NOT VALID;
COMMENT ON CONSTRAINT webhook_endpoints_url_check ON gm.webhook_endpoints IS 'http:// or https:// in any case, then a host (name, IPv4 or [IPv6]), an optional port and path';

RESET ROLE;
