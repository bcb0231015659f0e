-- Operating modes (see meridian_topology::modes): one row per scope, the
-- global default ('*', always with a mode) and regions' overrides (only
-- what they set). Changed only through the admin API, which writes the
-- audit log and an invalidation entry ('modes') in the same transaction,
-- so the change reaches every region with the replication stream.

create table mode_settings (
    scope      text primary key check (scope = '*' or scope ~ '^[a-z0-9-]{1,63}$'),
    mode       text check (mode in ('normal', 'degraded', 'read-only', 'maintenance')),
    -- {"feature": true|false}: explicit switches only.
    features   jsonb not null default '{}' check (jsonb_typeof(features) = 'object'),
    updated_at timestamptz not null default now(),
    updated_by text not null,
    check (scope <> '*' or mode is not null)
);

insert into mode_settings (scope, mode, updated_by) values ('*', 'normal', 'migration');

-- Who changed what, when and why; rows are never changed or removed.
create table mode_changes (
    id           bigint generated always as identity primary key,
    at           timestamptz not null default now(),
    actor        text not null check (length(actor) between 1 and 128),
    scope        text not null,
    old_mode     text,
    new_mode     text,
    old_features jsonb not null,
    new_features jsonb not null,
    reason       text not null check (length(reason) between 1 and 500)
);

create function mode_changes_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'the mode audit log is append-only' using errcode = 'insufficient_privilege';
end;
$$;

create trigger mode_changes_append_only
    before update or delete on mode_changes
    for each row execute function mode_changes_append_only();

create trigger mode_changes_no_truncate
    before truncate on mode_changes
    for each statement execute function mode_changes_append_only();
