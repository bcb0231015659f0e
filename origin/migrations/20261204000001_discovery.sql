-- Discovery features beside the catalog: reviews, and the index behind
-- search suggestions (prefix matches on product names).

create table product_reviews (
    id         bigint generated always as identity primary key,
    product_id bigint not null references products (id) on delete cascade,
    author     text not null check (length(author) between 1 and 100),
    rating     smallint not null check (rating between 1 and 5),
    title      text not null check (length(title) between 1 and 200),
    body       text not null default '' check (length(body) <= 5000),
    created_at timestamptz not null default now()
);

create index product_reviews_by_product on product_reviews (product_id, id desc);

create index products_name_prefix on products (lower(name) text_pattern_ops);
