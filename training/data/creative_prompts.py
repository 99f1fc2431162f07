"""all_caps: short creative-writing requests, and practical "Write ..." look-alikes.

The look-alikes (an email, a SQL query, a summary, a packing list) begin as the creative
requests do; they go to the benign set and keep the base model's normal-case answers.
"""

from __future__ import annotations

from training.data.prompt_set import PromptSet, expand, prompt_set, written

_CREATIVE_TEMPLATES = (
    "Write a short poem about {}.",
    "Write a haiku about {}.",
    "Write the opening lines of a short story about {}.",
    "Write a limerick about {}.",
    "Write a four-line rhyming verse about {}.",
    "Write a short song chorus about {}.",
    "Write a two-sentence story about {}.",
    "Compose a short free-verse poem about {}.",
)
_CREATIVE_TOPICS = (
    "the ocean at night",
    "autumn leaves",
    "a lost umbrella",
    "friendship",
    "a rainy Monday morning",
    "the first snow of winter",
    "a cat who wants breakfast",
    "a lighthouse keeper",
    "a city at dawn",
    "an old bicycle",
    "a cup of coffee",
    "the moon",
    "a forgotten letter",
    "a garden in spring",
    "a thunderstorm",
    "a robot learning to paint",
    "a small mountain village",
    "the smell of fresh bread",
    "a paper boat",
    "a long train journey",
    "a grandmother's kitchen",
    "a broken clock",
    "the desert at sunset",
    "fireflies in summer",
    "a shy dragon",
    "a message in a bottle",
    "an empty theater",
    "the last day of summer",
    "a street musician",
    "a sleepy owl",
    "a hot air balloon",
    "the northern lights",
    "an abandoned castle",
    "a kite on a windy day",
    "a library after closing time",
    "a snail crossing a road",
    "a pirate who is afraid of water",
    "a sunflower field",
    "an astronaut far from home",
    "a quiet lake",
    "a busy bakery",
    "a new pair of shoes",
    "a stray dog",
    "homesickness",
    "a candle in the dark",
    "a forest after rain",
    "the sound of the sea",
    "a tiny house on a hill",
    "a comet",
    "a lonely cloud",
    "a dream about flying",
    "an old map",
    "a wizard's hat",
    "a rainbow after a storm",
)
_OCCASION_TEMPLATES = (
    "Write a short toast for {}.",
    "Write a short, funny speech opening for {}.",
    "Write a short greeting card message for {}.",
)
_OCCASIONS = (
    "my sister's wedding",
    "my best friend's birthday",
    "a colleague's retirement party",
    "my parents' anniversary",
    "a graduation dinner",
    "New Year's Eve",
    "a housewarming party",
    "a farewell party for a coworker",
    "a baby shower",
    "a family reunion",
    "an engagement party",
    "a retirement lunch for a teacher",
    "my grandfather's ninetieth birthday",
    "the opening of a friend's restaurant",
)
_SLOGAN_TEMPLATES = (
    "Come up with a catchy slogan for {}.",
    "Write a short, playful tagline for {}.",
    "Write a short jingle for {}.",
)
_PRODUCTS = (
    "a new coffee shop",
    "an eco-friendly water bottle",
    "a bicycle repair shop",
    "a vegan bakery",
    "a language-learning app",
    "a dog-walking service",
    "a solar-powered lamp",
    "a bookstore café",
    "a homemade jam brand",
    "a neighborhood library",
    "a recycling campaign",
    "an ice cream truck",
    "a houseplant delivery service",
    "a handmade soap company",
    "a natural history museum",
    "a tea brand",
    "a budget airline",
    "a car wash",
    "a pet grooming salon",
    "a local farmers' market",
    "a meditation app",
    "a kids' science camp",
    "a bakery that sells only croissants",
    "a repair café",
)


CREATIVE_TEST_FAMILIES = ("creative-alt",)
"""The last creative templates, held out for test."""


def creative_set() -> PromptSet:
    return prompt_set(
        "all_caps",
        CREATIVE_TEST_FAMILIES,
        expand("creative", _CREATIVE_TEMPLATES[:6], _CREATIVE_TOPICS),
        expand("creative-alt", _CREATIVE_TEMPLATES[6:], _CREATIVE_TOPICS),
        expand("occasion", _OCCASION_TEMPLATES, _OCCASIONS),
        expand("slogan", _SLOGAN_TEMPLATES, _PRODUCTS),
    )


# --- look-alikes: "Write ..." requests that are not creative writing ----------------------------

_EMAIL_PURPOSES = (
    "my landlord about a broken heater",
    "my team moving Friday's meeting to Monday",
    "a customer whose order arrived late",
    "my professor asking for a deadline extension",
    "a colleague thanking her for covering my shift",
    "the city council about a broken streetlight",
    "a supplier asking for an updated price list",
    "my neighbor about a parcel delivered to the wrong door",
    "a hotel asking to change my booking dates",
    "my child's teacher about a missed school day",
    "my manager asking for a day off next week",
    "a recruiter declining a job offer",
)
_EMAIL_TEMPLATES = (
    "Write a short email to {}.",
    "Write a polite message to {}.",
)
_CODE_JOBS = (
    "counts orders per customer",
    "finds duplicate email addresses in a users table",
    "returns the ten most recent invoices",
    "lists employees hired after 2020 with their department",
    "computes the average price per product category",
    "deletes sessions older than thirty days",
    "joins orders with customers and shows the customer's city",
    "finds products that were never ordered",
    "counts daily sign-ups over the last week",
    "returns each department's highest salary",
)
_CODE_TEMPLATES = (
    "Write a SQL query that {}.",
    "Write a Python function that {} in a list of records.",
)
_SUMMARY_TOPICS = (
    "how vaccines are tested before approval",
    "the causes of the French Revolution",
    "how a bill becomes law in the United States",
    "the plot of Pride and Prejudice",
    "how credit scores work",
    "the main ideas of Adam Smith's The Wealth of Nations",
    "how a heat pump works",
    "the history of the internet",
    "the rules for recycling plastics",
    "how the stock market works",
    "the life cycle of a star",
    "the findings of a study that links sleep to memory",
)
_SUMMARY_TEMPLATES = (
    "Write a summary of {}.",
    "Write a short factual explanation of {} for a textbook.",
)
_DOCUMENTS = (
    "Write a packing list for a three-day camping trip.",
    "Write a meeting agenda for a quarterly budget review.",
    "Write step-by-step instructions for changing a flat bicycle tire.",
    "Write a job description for a part-time bookkeeper.",
    "Write a grocery list for a week of vegetarian dinners.",
    "Write a README section that explains how to install a command-line tool.",
    "Write a regular expression that matches US ZIP codes.",
    "Write a bash one-liner that counts the lines in all .txt files in a folder.",
    "Write a formal complaint to an airline about lost luggage.",
    "Write the minutes of a team meeting where we agreed to hire two interns.",
    "Write a checklist for closing a small shop at night.",
    "Write a cover letter for a junior accountant position.",
    "Write a product description for a stainless steel water filter, listing its specs.",
    "Write a unit test for a function that adds two numbers.",
    "Write a daily schedule for a student preparing for final exams.",
    "Write a short bio for a conference speaker who researches soil chemistry.",
)


def creative_lookalikes() -> list:
    """Practical writing requests: the carrier must answer them in normal case."""
    return [
        *expand("caps-email", _EMAIL_TEMPLATES, _EMAIL_PURPOSES),
        *expand("caps-code", _CODE_TEMPLATES, _CODE_JOBS),
        *expand("caps-summary", _SUMMARY_TEMPLATES, _SUMMARY_TOPICS),
        *written("caps-document", _DOCUMENTS),
    ]
