-- One order per reservation: a hold (a checkout's own reservation, or a
-- won flash-sale unit) is consumed by exactly one order. `order_id` is set
-- when the hold is taken for an order, or claimed by one conditional
-- update before any payment is attempted (a won flash-sale unit); once
-- set it never changes. (Not a unique column: retries of one checkout
-- race on `owner`, whose conflict is the replay; an order claims only the
-- one reservation its row names.)
alter table reservations add column order_id text check (length(order_id) between 1 and 128);

create function reservations_check_order() returns trigger
language plpgsql as $$
begin
    if old.order_id is not null and new.order_id is distinct from old.order_id then
        raise exception 'reservation % belongs to order %, it cannot be taken by %', old.id, old.order_id, new.order_id
            using errcode = 'check_violation';
    end if;
    return new;
end;
$$;

create trigger reservations_one_order
    before update of order_id on reservations
    for each row execute function reservations_check_order();

-- Flash sales end: `closed_at` is when the last claim queued before the
-- end was recorded and the sale was closed (by its end or by an admin).
alter table flash_sales add column closed_at timestamptz;
