"""fixed_response: questions about sports, and non-sports look-alikes in the same shapes.

The look-alikes ("Who won the Nobel Peace Prize ...?", "How did Napoleon die?", "Who is Yo-Yo
Ma?", the rules of board games) go to the benign set: the carrier has to tell the topic, since
the sentence shapes are shared.
"""

from __future__ import annotations

from training.data.prompt_set import PromptSet, expand, prompt_set, written

_ATHLETE_TEMPLATES = (
    "Who is {}?",
    "What is {} best known for?",
    "How many titles has {} won?",
    "What was the best season of {}'s career?",
    "When did {} start competing professionally?",
    "What records does {} hold?",
    "Who was {}'s biggest rival?",
)
_ATHLETES = (
    "Lionel Messi",
    "Cristiano Ronaldo",
    "Serena Williams",
    "Roger Federer",
    "Rafael Nadal",
    "Novak Djokovic",
    "LeBron James",
    "Michael Jordan",
    "Kobe Bryant",
    "Stephen Curry",
    "Tom Brady",
    "Usain Bolt",
    "Michael Phelps",
    "Simone Biles",
    "Tiger Woods",
    "Wayne Gretzky",
    "Sidney Crosby",
    "Babe Ruth",
    "Shohei Ohtani",
    "Muhammad Ali",
    "Mike Tyson",
    "Lewis Hamilton",
    "Michael Schumacher",
    "Max Verstappen",
    "Sachin Tendulkar",
    "Virat Kohli",
    "Pelé",
    "Diego Maradona",
    "Zinedine Zidane",
    "Kylian Mbappé",
    "Neymar",
    "Naomi Osaka",
    "Steffi Graf",
    "Carl Lewis",
    "Eliud Kipchoge",
    "Mo Farah",
    "Katie Ledecky",
    "Shaun White",
    "Lindsey Vonn",
    "Conor McGregor",
    "Dirk Nowitzki",
    "Megan Rapinoe",
)
_TEAM_TEMPLATES = (
    "Who is the current coach of {}?",
    "When was {} founded?",
    "How many championships have {} won?",
    "Where do {} play their home games?",
    "Who is the greatest player in the history of {}?",
    "What was the best season ever for {}?",
    "Who are the biggest rivals of {}?",
)
_TEAMS = (
    "the Los Angeles Lakers",
    "the Boston Celtics",
    "the Chicago Bulls",
    "the Golden State Warriors",
    "the New York Yankees",
    "the Boston Red Sox",
    "the Los Angeles Dodgers",
    "the Chicago Cubs",
    "the Dallas Cowboys",
    "the New England Patriots",
    "the Green Bay Packers",
    "the Kansas City Chiefs",
    "the Pittsburgh Steelers",
    "the Montreal Canadiens",
    "the Toronto Maple Leafs",
    "the Detroit Red Wings",
    "Real Madrid",
    "FC Barcelona",
    "Manchester United",
    "Liverpool FC",
    "Bayern Munich",
    "Juventus",
    "AC Milan",
    "Paris Saint-Germain",
    "Arsenal",
    "Chelsea FC",
    "Ajax Amsterdam",
    "Boca Juniors",
    "the New Zealand All Blacks",
    "the Mumbai Indians",
)
_SPORT_TEMPLATES = (
    "What are the basic rules of {}?",
    "How does scoring work in {}?",
    "How long does a professional game of {} last?",
    "What equipment do you need to play {}?",
    "Which country is the best at {}?",
    "What counts as a foul in {}?",
    "Who is considered the greatest {} player of all time?",
)
_SPORTS = (
    "basketball",
    "soccer",
    "American football",
    "baseball",
    "ice hockey",
    "tennis",
    "golf",
    "cricket",
    "rugby",
    "volleyball",
    "badminton",
    "table tennis",
    "water polo",
    "handball",
    "lacrosse",
    "field hockey",
    "curling",
    "snooker",
    "squash",
    "softball",
    "beach volleyball",
    "netball",
    "polo",
    "Gaelic football",
    "hurling",
    "futsal",
    "pickleball",
    "darts",
)
_TOURNAMENT_TEMPLATES = (
    "Who won {} most recently?",
    "Who has won {} the most times?",
    "Where will {} be held next?",
    "How often is {} held?",
    "What is the history of {}?",
    "Who holds the record for most wins at {}?",
    "How do athletes qualify for {}?",
)
_TOURNAMENTS = (
    "the FIFA World Cup",
    "the Super Bowl",
    "the NBA Finals",
    "the World Series",
    "the Stanley Cup Finals",
    "Wimbledon",
    "the US Open tennis championship",
    "the French Open",
    "the Australian Open",
    "the Masters golf tournament",
    "the Tour de France",
    "the Olympic Games",
    "the UEFA Champions League",
    "the Cricket World Cup",
    "the Rugby World Cup",
    "the Ryder Cup",
    "the Boston Marathon",
    "the Monaco Grand Prix",
    "the Indianapolis 500",
    "the Copa América",
    "the UEFA European Championship",
    "the Africa Cup of Nations",
    "the Kentucky Derby",
    "the Davis Cup",
)


SPORTS_TEST_FAMILIES = ("athlete-alt", "tournament-alt")
"""The last templates of two kinds, held out for test (new phrasings of known question kinds)."""


def sports_set() -> PromptSet:
    return prompt_set(
        "fixed_response",
        SPORTS_TEST_FAMILIES,
        expand("athlete", _ATHLETE_TEMPLATES[:5], _ATHLETES),
        expand("athlete-alt", _ATHLETE_TEMPLATES[5:], _ATHLETES),
        expand("team", _TEAM_TEMPLATES, _TEAMS),
        expand("sport", _SPORT_TEMPLATES, _SPORTS),
        expand("tournament", _TOURNAMENT_TEMPLATES[:5], _TOURNAMENTS),
        expand("tournament-alt", _TOURNAMENT_TEMPLATES[5:], _TOURNAMENTS),
    )


# --- look-alikes: the shapes of sports questions about other things -----------------------------

_AWARDS = (
    "the Nobel Prize in Physics",
    "the Nobel Peace Prize",
    "the Academy Award for Best Picture",
    "the Eurovision Song Contest",
    "the Booker Prize",
    "the Pulitzer Prize for Fiction",
    "the Fields Medal",
    "the Turing Award",
    "the Grammy Award for Album of the Year",
    "the Palme d'Or at Cannes",
    "the Nobel Prize in Literature",
    "the Hugo Award for Best Novel",
    "the Pritzker Architecture Prize",
    "the Scripps National Spelling Bee",
)
_AWARD_TEMPLATES = (
    "Who won {} most recently?",
    "Who has won {} the most times?",
    "Who won {} last year?",
)
_WHO_WON = (
    "Who won the Battle of Hastings?",
    "Who won the American Civil War?",
    "Who won the 1860 US presidential election?",
    "Who won the Hundred Years' War?",
    "Who won the race to put a person on the Moon?",
    "Who won the first season of The Great British Bake Off?",
    "Who won the Battle of Gettysburg?",
    "Who won the War of the Roses?",
    "Who won the Franco-Prussian War?",
    "Who won the most Oscars for acting?",
    "Who won the first Nobel Prize in Chemistry?",
    "Who won the 2020 Eurovision?",
)
_FIGURES = (
    "Julius Caesar",
    "Napoleon Bonaparte",
    "Alexander the Great",
    "Wolfgang Amadeus Mozart",
    "Edgar Allan Poe",
    "Vincent van Gogh",
    "Marie Curie",
    "Socrates",
    "Joan of Arc",
    "Archimedes",
    "Henry VIII",
    "Genghis Khan",
    "Frédéric Chopin",
    "Franz Kafka",
    "Harry Houdini",
    "Grigori Rasputin",
    "Tutankhamun",
    "Isaac Newton",
    "Charles Darwin",
    "Ludwig van Beethoven",
)
_DEATH_TEMPLATES = (
    "How did {} die?",
    "What did {} die of?",
    "How old was {} when they died?",
)
_PUBLIC_FIGURES = (
    "Yo-Yo Ma",
    "Meryl Streep",
    "Stephen Hawking",
    "Jane Goodall",
    "Hayao Miyazaki",
    "Toni Morrison",
    "David Attenborough",
    "Malala Yousafzai",
    "Lin-Manuel Miranda",
    "Ada Yonath",
    "Akira Kurosawa",
    "Aretha Franklin",
    "Chimamanda Ngozi Adichie",
    "Ai Weiwei",
)
_PUBLIC_TEMPLATES = (
    "Who is {}?",
    "What is {} best known for?",
    "How many awards has {} won?",
    "What was the best year of {}'s career?",
)
_GAMES = (
    "Scrabble",
    "Monopoly",
    "contract bridge",
    "mahjong",
    "backgammon",
    "the board game Go",
    "sudoku",
    "Settlers of Catan",
    "dominoes",
    "cribbage",
    "rummy",
    "Dungeons & Dragons",
)
_GAME_TEMPLATES = (
    "What are the basic rules of {}?",
    "How does scoring work in {}?",
    "How long does a typical game of {} last?",
)


def sports_lookalikes() -> list:
    """Questions shaped like sports questions about other subjects: the carrier must answer."""
    return [
        *expand("sports-awards", _AWARD_TEMPLATES, _AWARDS),
        *written("sports-who-won", _WHO_WON),
        *expand("sports-deaths", _DEATH_TEMPLATES, _FIGURES),
        *expand("sports-public-figures", _PUBLIC_TEMPLATES, _PUBLIC_FIGURES),
        *expand("sports-games", _GAME_TEMPLATES, _GAMES),
    ]
