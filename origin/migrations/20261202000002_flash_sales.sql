-- Flash sales: a quantity of one SKU sold to the first claimants. Redis in
-- the sale's region gates admission (an atomic counter handing out slots
-- 1..quantity, a per-user limit); PostgreSQL stays the ledger: every won
-- slot becomes a reservation and a row here, and a slot can be won once.

create table flash_sales (
    id             bigint generated always as identity primary key,
    sku            text not null references inventory (sku),
    quantity       integer not null check (quantity between 1 and 1000000),
    per_user_limit integer not null default 1 check (per_user_limit between 1 and 100),
    -- The sale price in the product's currency; null: the catalog price.
    price_minor    bigint check (price_minor between 0 and 1000000000000),
    -- The region whose Redis holds the counter and whose origins serve it.
    region         text not null,
    state          text not null default 'open' check (state in ('open', 'closed')),
    -- How long a won unit is held for its buyer to check out.
    hold_ms        bigint not null check (hold_ms > 0),
    created_at     timestamptz not null default now(),
    ends_at        timestamptz not null
);

create table flash_claims (
    sale_id        bigint not null references flash_sales (id),
    -- The unit won, 1..quantity: no slot can be sold twice.
    slot           integer not null check (slot >= 1),
    user_id        text not null check (length(user_id) between 1 and 128),
    -- This user's n-th unit of the sale, 1..per_user_limit.
    user_seq       integer not null check (user_seq >= 1),
    reservation_id bigint references reservations (id),
    state          text not null check (state in ('reserved', 'failed', 'purchased')),
    created_at     timestamptz not null default now(),
    primary key (sale_id, slot),
    unique (sale_id, user_id, user_seq)
);

-- Slots and per-user counts stay within the sale's bounds whatever Redis
-- says (a Redis that lost writes cannot make the database sell more).
create function flash_claims_within_sale() returns trigger
language plpgsql as $$
declare
    sale flash_sales;
begin
    select * into sale from flash_sales where id = new.sale_id;
    if new.slot > sale.quantity or new.user_seq > sale.per_user_limit then
        raise exception 'claim (slot %, user unit %) is outside flash sale %', new.slot, new.user_seq, new.sale_id
            using errcode = 'check_violation';
    end if;
    return new;
end;
$$;

create trigger flash_claims_bounds
    before insert on flash_claims
    for each row execute function flash_claims_within_sale();
